"""What went wrong, as an exit code and a message that says what to do next.

The client library's typed errors are turned into the command line's own here, in one place;
no message built here ever holds a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

import grpc

from authz_client import (
    Aborted,
    AlreadyExists,
    AuthzClientError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)


class ExitCode(IntEnum):
    """`authz-admin`'s exit codes; docs/admin-cli.md's table lists the same."""

    OK = 0
    DENIED = 1  # `check` answered DENY
    USAGE = 2  # the request cannot succeed as given
    NOT_FOUND = 3  # no such entry, or a subject names several
    NOT_AUTHORIZED = 4  # the admin token is missing, unknown or under-scoped
    NO_SERVER = 5  # nothing answered, in time or at all, or the server failed
    CONFLICT = 6  # the entry's current state is in the way
    OUTPUT = 7  # the result could not be written to stdout
    CHAIN_BROKEN = 8  # `audit --verify` found an edited, missing or out-of-place event
    INCOMPLETE = 9  # `import-backstage` left entries out: conflict, skipped, not importable


class CommandError(Exception):
    """Root of the command line's failures; never raised itself.

    `message` is the first line printed; `details` follow it, one per line.
    """

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *details: str) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class UsageError(CommandError):
    """Bad arguments, bad token input, or a request the server refused as invalid."""

    exit_code = ExitCode.USAGE


class EntryNotFound(CommandError):
    """No entry has that id or subject, or the subject names several entries."""

    exit_code = ExitCode.NOT_FOUND


class NotAuthorized(CommandError):
    """The admin token is missing, was not accepted, or lacks the permission."""

    exit_code = ExitCode.NOT_AUTHORIZED


class NoServer(CommandError):
    """No server answered at the target in time, or it failed the call."""

    exit_code = ExitCode.NO_SERVER


class Conflict(CommandError):
    """The entry's state is in the way: subject or token taken, stale etag, revoked entry."""

    exit_code = ExitCode.CONFLICT


class OutputError(CommandError):
    """The result could not be written to stdout: it is closed, a full disk, a closed pipe."""

    exit_code = ExitCode.OUTPUT


class ChainBroken(CommandError):
    """`audit --verify` found the audit log's hash chain broken: an event was edited or
    deleted outside the service (or the log was served out of order)."""

    exit_code = ExitCode.CHAIN_BROKEN


AUTHZ_SERVICE = "authz.v1.AuthzService"
ADMIN_SERVICE = "authz.v1.AdminService"


@dataclass(frozen=True, slots=True)
class Situation:
    """What a message needs to know to say what to do next."""

    target: str
    timeout: float
    permissions: str  # the admin permissions the command needs, in words
    entry: str | None = None  # the id or subject the command was given
    # The server's names of request fields, as the command line's flags and values say them.
    fields: Mapping[str, str] = field(default_factory=dict)
    # The service the command calls (Check for `check`, else AdminService), and, after an
    # UNIMPLEMENTED, the services the target's health service knows (None: not asked).
    service: str = ADMIN_SERVICE
    serves: frozenset[str] | None = None

    def given(self, name: str) -> str:
        """A request field the server named, as this command line gave it."""
        return self.fields.get(name.removeprefix("entry."), name)


def explain(error: AuthzClientError, situation: Situation) -> CommandError:  # noqa: PLR0911 (one per status)
    """The command line's error for a failed call."""
    server_said = error.message
    entry = situation.entry or "ENTRY"
    if isinstance(error, InvalidArgument):
        if error.violations:
            return UsageError(
                "the server refused the request; fix these and run it again:",
                *(f"{situation.given(v.field)}: {v.description}" for v in error.violations),
            )
        return UsageError(f"the server refused the request: {server_said}")
    if isinstance(error, NotFound):
        return EntryNotFound(
            f"no entry {entry!r} ({server_said}): `authz-admin list --all` shows every entry"
        )
    if isinstance(error, AlreadyExists):
        return _taken(server_said, situation)
    if isinstance(error, Aborted):
        return Conflict(
            "the entry changed since it was read (stale etag): re-read it with "
            f"`authz-admin get {entry}` and run the command again (without a stale --etag)"
        )
    if isinstance(error, FailedPrecondition):
        return Conflict(f"{server_said}: create a new entry with `authz-admin create` instead")
    if isinstance(error, Unauthenticated):
        return NotAuthorized(
            f"the server did not accept the admin token ({server_said}): set "
            f"AUTHZ_ADMIN_TOKEN (or --admin-token-file) to a token with {situation.permissions}"
        )
    if isinstance(error, PermissionDenied):
        return NotAuthorized(
            f"{server_said}: set AUTHZ_ADMIN_TOKEN (or --admin-token-file) to a token with "
            f"{situation.permissions}"
        )
    if isinstance(error, Unavailable):
        return _unavailable(server_said, situation.target)
    if isinstance(error, DeadlineExceeded):
        return NoServer(
            f"no answer from {situation.target} within {situation.timeout:g} s: is "
            "`authz-service serve` running there? Raise --timeout if it is only slow"
        )
    if error.code == grpc.StatusCode.UNIMPLEMENTED:
        return _unimplemented(server_said, situation)
    return NoServer(
        f"the server at {situation.target} failed the call ({error.code.name}: {server_said}): "
        "is it an authz-service? Its log says more"
    )


# Words grpc itself uses for a call that never reached a server (connection refused, name
# lookup failed, connection lost); an UNAVAILABLE without them came from the server itself.
_UNREACHED = ("connect", "refused", "resolv", "lookup", "socket", "reset", "unreachable")


def _unavailable(details: str, target: str) -> NoServer:
    if any(words in details.lower() for words in _UNREACHED):
        return NoServer(
            f"no server answered at {target} ({details}): is `authz-service serve` running "
            "there? Set --target or AUTHZ_TARGET to its address; if it serves TLS, give "
            "--tls-ca (and --tls-cert with --tls-key under mTLS)"
        )
    return NoServer(
        f"the server at {target} cannot serve the call now ({details}): "
        "try again shortly; if it persists, its log says more"
    )


def _taken(server_said: str, situation: Situation) -> Conflict:
    """A subject or token in use: the advice differs, and the server's words say which."""
    name, colon, why = server_said.partition(": ")
    taken = f"{situation.given(name)}: {why}" if colon else server_said
    if name in {"token", "new_token"}:
        hint = "use a fresh one: --generate, or one from `authz-admin gen-token`"
    else:
        hint = "pick another subject, or revoke the entry that holds it first"
    return Conflict(f"{taken}; {hint}")


def _unimplemented(details: str, situation: Situation) -> NoServer:
    """The target does not serve the call: another listener of the same server may."""
    target, wanted = situation.target, situation.service
    other = AUTHZ_SERVICE if wanted == ADMIN_SERVICE else ADMIN_SERVICE
    serves = situation.serves or frozenset()
    if other in serves and wanted not in serves:
        if wanted == ADMIN_SERVICE:
            return NoServer(
                f"{target} does not serve AdminService: its server has an admin listener "
                "(AUTHZ_ADMIN_LISTEN, --admin-listen), and admin commands go to that port; "
                "point --target (or AUTHZ_TARGET) at it"
            )
        return NoServer(
            f"{target} serves AdminService alone: it is a server's admin listener "
            "(AUTHZ_ADMIN_LISTEN, --admin-listen); `check` asks Check on the main port "
            "(AUTHZ_LISTEN): point --target (or AUTHZ_TARGET) at that one"
        )
    return NoServer(
        f"the server at {target} does not serve {wanted} (UNIMPLEMENTED: {details}): "
        "is it an authz-service?"
    )
