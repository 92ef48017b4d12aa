"""`authz-admin`: create, inspect, change, rotate and revoke entries, and test tokens with Check.

docs/admin-cli.md documents every command, the restriction form, where
tokens come from, the settings, the output formats and the exit codes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

import grpc

from authz_client import AuthzClient, AuthzClientError, Entry, NotFound, tls_credentials

from ._arguments import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    RESTRICTION_FORM,
    access_of,
    parse_arguments,
    update_fields,
)
from ._entries import by_subject, find_entry, looks_like_id
from ._failures import CommandError, ExitCode, Situation, UsageError, explain
from ._output import Output
from ._secrets import generate_token, read_admin_token, read_token

INTERRUPTED = 130  # as shells report Ctrl-C

_READ = "authz.entry.read"
# The admin permissions each command needs, in words, for the message when they are missing.
PERMISSIONS = {
    "get": _READ,
    "list": _READ,
    "create": "authz.entry.create",
    "update": f"{_READ} and authz.entry.update",
    "rotate": f"{_READ} and authz.entry.update",
    "revoke": f"authz.entry.revoke (and {_READ} to name an entry by subject)",
    "check": "",
}
UNRESTRICTED_WARNING = (
    "--unrestricted lets this token reach every plugin except authz; "
    f"prefer --allow {RESTRICTION_FORM} for only what the integration needs"
)
GENERATED_WARNING = (
    "the token printed above is shown this once and can never be shown again: "
    "store it in your secrets manager now (if it is lost, `authz-admin rotate` sets a new one)"
)


# A command reads and checks its local input first, then returns the part that talks to the
# server, so bad input never costs a call (nor a look at the admin token).
Remote = Callable[[AuthzClient], ExitCode]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (docs/admin-cli.md's table)."""
    args = parse_arguments(argv)
    out = Output(sys.stdout, sys.stderr, as_json=args.json)
    try:
        return run(args, out, os.environ, sys.stdin)
    except CommandError as failure:
        out.error(failure)
        return failure.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return INTERRUPTED


def run(
    args: argparse.Namespace, out: Output, environ: Mapping[str, str], stdin: TextIO
) -> ExitCode:
    """Run one parsed command; failures raise CommandError."""
    if args.command == "gen-token":
        out.token(generate_token())
        return ExitCode.OK
    remote = _COMMANDS[args.command](args, out, stdin)
    target = args.target or environ.get("AUTHZ_TARGET") or DEFAULT_TARGET
    timeout = args.timeout or DEFAULT_TIMEOUT
    needs = PERMISSIONS[args.command]
    admin_token = (
        None
        if args.command == "check"
        else read_admin_token(args.admin_token_file, environ, needs=needs)
    )
    credentials = channel_credentials(args, environ)
    situation = Situation(target, timeout, needs, getattr(args, "entry", None))
    try:
        with AuthzClient(
            target, admin_token=admin_token, timeout=timeout, credentials=credentials
        ) as client:
            return remote(client)
    except AuthzClientError as error:
        raise explain(error, situation) from None


def channel_credentials(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> grpc.ChannelCredentials | None:
    """TLS credentials when --tls-ca, --tls-cert or --tls-key (or their variables) are given;
    None means plaintext."""
    ca = args.tls_ca or environ.get("AUTHZ_TLS_CA") or None
    cert = args.tls_cert or environ.get("AUTHZ_TLS_CLIENT_CERT") or None
    key = args.tls_key or environ.get("AUTHZ_TLS_CLIENT_KEY") or None
    if not (ca or cert or key):
        return None
    try:
        return tls_credentials(ca, cert, key)
    except ValueError:
        raise UsageError(
            "a client certificate needs both --tls-cert (AUTHZ_TLS_CLIENT_CERT) and "
            "--tls-key (AUTHZ_TLS_CLIENT_KEY)"
        ) from None
    except OSError as error:
        raise UsageError(f"cannot read {error.filename}: {error.strerror}") from None


def _create(args: argparse.Namespace, out: Output, stdin: TextIO) -> Remote:
    access = access_of(args)
    if access is None:
        raise UsageError(
            f"say what the token may reach: --allow {RESTRICTION_FORM} (repeatable), "
            "or --unrestricted"
        )
    if access.unrestricted:
        out.warn(UNRESTRICTED_WARNING)
    token = _new_token(args, stdin)

    def create(client: AuthzClient) -> ExitCode:
        entry = client.create_entry(
            args.subject,
            token,
            restrictions=access.restrictions,
            unrestricted=access.unrestricted,
            description=args.description,
            expire_time=args.expires,
        )
        _show_with_new_token(args, out, entry, token)
        return ExitCode.OK

    return create


def _get(args: argparse.Namespace, out: Output, stdin: TextIO) -> Remote:
    def get(client: AuthzClient) -> ExitCode:
        out.entry(find_entry(client, args.entry))
        return ExitCode.OK

    return get


def _list(args: argparse.Namespace, out: Output, stdin: TextIO) -> Remote:
    def list_(client: AuthzClient) -> ExitCode:
        out.entries(list(client.iter_entries(include_revoked=args.include_revoked)))
        return ExitCode.OK

    return list_


def _update(args: argparse.Namespace, out: Output, stdin: TextIO) -> Remote:
    fields = update_fields(args)
    if args.unrestricted:
        out.warn(UNRESTRICTED_WARNING)

    def update(client: AuthzClient) -> ExitCode:
        entry = find_entry(client, args.entry)
        out.entry(client.update_entry(entry.id, args.etag or entry.etag, **fields))
        return ExitCode.OK

    return update


def _rotate(args: argparse.Namespace, out: Output, stdin: TextIO) -> Remote:
    token = _new_token(args, stdin)

    def rotate(client: AuthzClient) -> ExitCode:
        entry = find_entry(client, args.entry)
        rotated = client.rotate_token(entry.id, args.etag or entry.etag, token)
        _show_with_new_token(args, out, rotated, token)
        return ExitCode.OK

    return rotate


def _revoke(args: argparse.Namespace, out: Output, stdin: TextIO) -> Remote:
    def revoke(client: AuthzClient) -> ExitCode:
        if looks_like_id(args.entry):
            try:
                out.entry(client.revoke_entry(args.entry, args.reason))
            except NotFound:
                pass  # a subject may look like an id too
            else:
                return ExitCode.OK
        entry = by_subject(list(client.iter_entries(include_revoked=True)), args.entry)
        out.entry(client.revoke_entry(entry.id, args.reason))
        return ExitCode.OK

    return revoke


def _check(args: argparse.Namespace, out: Output, stdin: TextIO) -> Remote:
    token = read_token(args.token_file, stdin, what="token to check", confirm=False)

    def check(client: AuthzClient) -> ExitCode:
        result = client.check(token, args.plugin, args.permission, args.action)
        out.check(result)
        return ExitCode.OK if result.allowed else ExitCode.DENIED

    return check


def _new_token(args: argparse.Namespace, stdin: TextIO) -> str:
    if args.generate:
        return generate_token()
    return read_token(args.token_file, stdin, what="new token", confirm=True)


def _show_with_new_token(args: argparse.Namespace, out: Output, entry: Entry, token: str) -> None:
    # Only a generated token is shown, and only now: one the admin supplied they already hold.
    if args.generate:
        out.entry(entry, token=token)
        out.warn(GENERATED_WARNING)
    else:
        out.entry(entry)


_COMMANDS: dict[str, Callable[[argparse.Namespace, Output, TextIO], Remote]] = {
    "create": _create,
    "get": _get,
    "list": _list,
    "update": _update,
    "rotate": _rotate,
    "revoke": _revoke,
    "check": _check,
}

if __name__ == "__main__":
    sys.exit(main())
