"""What went wrong, as an exit code and a message that says what to do next.

The client library's typed errors are turned into the command line's own here, in one place;
no message built here ever holds a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

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


@dataclass(frozen=True, slots=True)
class Situation:
    """What a message needs to know to say what to do next."""

    target: str
    timeout: float
    permissions: str  # the admin permissions the command needs, in words
    entry: str | None = None  # the id or subject the command was given


def explain(error: AuthzClientError, situation: Situation) -> CommandError:  # noqa: PLR0911 (one per status)
    """The command line's error for a failed call."""
    server_said = error.message
    entry = situation.entry or "ENTRY"
    if isinstance(error, InvalidArgument):
        if error.violations:
            return UsageError(
                "the server refused the request; fix these fields and run it again:",
                *(f"{v.field}: {v.description}" for v in error.violations),
            )
        return UsageError(f"the server refused the request: {server_said}")
    if isinstance(error, NotFound):
        return EntryNotFound(
            f"no entry {entry!r} ({server_said}): `authz-admin list --all` shows every entry"
        )
    if isinstance(error, AlreadyExists):
        if server_said.startswith("token"):
            hint = "use a fresh token, e.g. from `authz-admin gen-token`: tokens are never reused"
        else:
            hint = "pick another subject, or revoke the entry that holds it first"
        return Conflict(f"{server_said}: {hint}")
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
