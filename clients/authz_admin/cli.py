"""`authz-admin`: create, inspect, change, rotate and revoke entries, test tokens with Check,
and read and verify the audit log.

docs/admin-cli.md documents every command, the restriction form, where
tokens come from, the settings, the output formats and the exit codes.
"""

from __future__ import annotations

import os

# grpc reads GRPC_VERBOSITY once, when it is first imported (just below): its own INFO lines,
# such as a refused TLS handshake, stay off the terminal unless the operator asks for them.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse
import dataclasses
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
    field_labels,
    parse_arguments,
    update_fields,
)
from ._audit import PERMISSION as AUDIT_PERMISSION
from ._audit import audit
from ._backstage import run_import
from ._backstage_config import read_plan
from ._entries import by_subject, find_entry, looks_like_id
from ._failures import (
    ADMIN_SERVICE,
    AUTHZ_SERVICE,
    CommandError,
    ExitCode,
    OutputError,
    Situation,
    UsageError,
    explain,
)
from ._listeners import services_at
from ._output import Output, when
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
    "audit": AUDIT_PERMISSION,
    "import-backstage": f"{_READ} and authz.entry.create ({_READ} alone for --dry-run)",
}
UNRESTRICTED_WARNING = (
    "--unrestricted lets this token reach every plugin except authz; "
    f"prefer --allow {RESTRICTION_FORM} for only what the integration needs"
)
GENERATED_WARNING = (
    "the token printed above is shown this once and can never be shown again: "
    "store it in your secrets manager now (if it is lost, `authz-admin rotate` sets a new one)"
)
# The revoke reason of an entry created with --generate whose token could not be shown.
UNSHOWN_REASON = "authz-admin: the generated token could not be written to stdout"


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
        if isinstance(failure, OutputError):
            _discard_stdout()
        return failure.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return INTERRUPTED


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of what could not be
    written fails no more (it would print "Exception ignored")."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # closed, or not a file
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


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
    situation = Situation(
        target,
        timeout,
        needs,
        getattr(args, "entry", None),
        fields=field_labels(args),
        service=AUTHZ_SERVICE if args.command == "check" else ADMIN_SERVICE,
    )
    try:
        with AuthzClient(
            target, admin_token=admin_token, timeout=timeout, credentials=credentials
        ) as client:
            return remote(client)
    except AuthzClientError as error:
        if error.code == grpc.StatusCode.UNIMPLEMENTED:
            # Perhaps the other listener of a server with an admin listener: ask which.
            serves = services_at(target, credentials, timeout)
            situation = dataclasses.replace(situation, serves=serves)
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
        if args.generate:
            _ready_to_show(out)  # no entry is made for a token that could not be shown
        entry = client.create_entry(
            args.subject,
            token,
            restrictions=access.restrictions,
            unrestricted=access.unrestricted,
            description=args.description,
            expire_time=args.expires,
        )
        if not args.generate:  # the admin holds the token they gave: it is never shown
            _show_written(out, entry, "was created")
            return ExitCode.OK
        try:
            out.entry(entry, token=token)
        except OutputError as failure:
            raise _withdrawn(client, entry, failure) from None
        out.warn(GENERATED_WARNING)
        return ExitCode.OK

    return create


def _ready_to_show(out: Output) -> None:
    try:
        out.ready()
    except OutputError as failure:
        raise OutputError(
            f"{failure.message}, so a generated token could not be shown: nothing was sent"
        ) from None


def _withdrawn(client: AuthzClient, entry: Entry, failure: OutputError) -> OutputError:
    """Revoke an entry just created for a generated token that could not be shown: no one
    holds that token, so the entry must not stay in force."""
    unshown = f"{failure.message}, so the generated token was not shown"
    try:
        client.revoke_entry(entry.id, UNSHOWN_REASON)
    except AuthzClientError as error:
        return OutputError(
            f"{unshown}; the entry {entry.id} ({entry.subject}) was created for it and could "
            f"not be revoked ({error.message}): have it revoked with `authz-admin revoke "
            f"{entry.id}` (no one holds its token), then create it again"
        )
    return OutputError(
        f"{unshown}; the entry {entry.id} just created for it was revoked at once: run the "
        "command again with a stdout that can be written"
    )


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
        _show_written(out, client.update_entry(entry.id, args.etag or entry.etag, **fields))
        return ExitCode.OK

    return update


def _rotate(args: argparse.Namespace, out: Output, stdin: TextIO) -> Remote:
    token = _new_token(args, stdin)

    def rotate(client: AuthzClient) -> ExitCode:
        entry = find_entry(client, args.entry)
        if args.generate:
            _ready_to_show(out)  # no token is retired for one that could not be shown
        rotated = client.rotate_token(entry.id, args.etag or entry.etag, token, grace=args.grace)
        old_until = rotated.previous_token_expire_time
        if old_until is None:
            old_fate = "the old token no longer works"
        else:
            old_fate = (
                f"the old token keeps working until {when(old_until)} "
                "(rotating again ends it at once)"
            )
        if not args.generate:
            _show_written(out, rotated, "has its new token")
            out.note(f"{old_fate}; the new one works now")
            return ExitCode.OK
        try:
            out.entry(rotated, token=token)
        except OutputError as failure:
            raise OutputError(
                f"{failure.message}, so the generated token was not shown; the entry "
                f"{rotated.id} ({rotated.subject}) was rotated to it all the same: its old "
                f"{old_fate.removeprefix('the old ')} and no one holds the new one. Rotate it "
                "again with a stdout that can be written: "
                f"`authz-admin rotate {rotated.id} --generate`"
            ) from None
        out.warn(GENERATED_WARNING)
        out.note(f"{old_fate}; the new one is the token shown above")
        return ExitCode.OK

    return rotate


def _revoke(args: argparse.Namespace, out: Output, stdin: TextIO) -> Remote:
    def revoke(client: AuthzClient) -> ExitCode:
        if looks_like_id(args.entry):
            try:
                revoked = client.revoke_entry(args.entry, args.reason)
            except NotFound:
                pass  # a subject may look like an id too
            else:
                _show_written(out, revoked, "is revoked")
                return ExitCode.OK
        entry = by_subject(list(client.iter_entries(include_revoked=True)), args.entry)
        _show_written(out, client.revoke_entry(entry.id, args.reason), "is revoked")
        return ExitCode.OK

    return revoke


def _check(args: argparse.Namespace, out: Output, stdin: TextIO) -> Remote:
    token = read_token(args.token_file, stdin, what="token to check", confirm=False)

    def check(client: AuthzClient) -> ExitCode:
        result = client.check(token, args.plugin, args.permission, args.action)
        try:
            out.check(result)
        except OutputError as failure:
            # Exit 7, not 0 or 1: a script must not read a decision into lost output.
            said = "ALLOW" if result.allowed else f"DENY {result.http_status} {result.reason}"
            raise OutputError(f"{failure.message}; Check answered {said}") from None
        return ExitCode.OK if result.allowed else ExitCode.DENIED

    return check


def _import_backstage(args: argparse.Namespace, out: Output, stdin: TextIO) -> Remote:
    # Its ${VAR}s come from this process's environment, as a Backstage backend's from its own.
    plan = read_plan(args.app_config, os.environ, allow_unrestricted=args.allow_unrestricted)

    def import_(client: AuthzClient) -> ExitCode:
        if args.check_target is None:
            return run_import(plan, client, client, out, dry_run=args.dry_run)
        credentials = channel_credentials(args, os.environ)
        with AuthzClient(
            args.check_target, timeout=client.timeout, credentials=credentials
        ) as checker:
            return run_import(plan, client, checker, out, dry_run=args.dry_run)

    return import_


def _new_token(args: argparse.Namespace, stdin: TextIO) -> str:
    if args.generate:
        return generate_token()
    return read_token(args.token_file, stdin, what="new token", confirm=True)


def _show_written(out: Output, entry: Entry, done: str = "was updated") -> None:
    """Show an entry a write just changed; when stdout fails, say the write took effect."""
    try:
        out.entry(entry)
    except OutputError as failure:
        raise OutputError(
            f"the entry {entry.id} ({entry.subject}) {done}, but {failure.message}: "
            f"`authz-admin get {entry.id}` shows it"
        ) from None


_COMMANDS: dict[str, Callable[[argparse.Namespace, Output, TextIO], Remote]] = {
    "create": _create,
    "get": _get,
    "list": _list,
    "update": _update,
    "rotate": _rotate,
    "revoke": _revoke,
    "check": _check,
    "audit": audit,
    "import-backstage": _import_backstage,
}

if __name__ == "__main__":
    sys.exit(main())
