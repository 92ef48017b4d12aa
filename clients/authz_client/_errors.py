"""The client library's errors, mapped from gRPC status codes in exactly one place."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field, as the server named it."""

    field: str
    description: str


class AuthzClientError(Exception):
    """Root of the client's errors; never raised itself. `code` is the gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, violations: tuple[FieldViolation, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.violations = violations


class InvalidArgument(AuthzClientError):
    """The request broke a rule; `violations` names each bad field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(AuthzClientError):
    """No entry has that id."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(AuthzClientError):
    """The subject or token is already taken."""

    code = grpc.StatusCode.ALREADY_EXISTS


class Aborted(AuthzClientError):
    """The entry changed since it was read (stale etag): read it again and retry."""

    code = grpc.StatusCode.ABORTED


class FailedPrecondition(AuthzClientError):
    """The entry's state does not allow the call (e.g. updating a revoked entry)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(AuthzClientError):
    """The admin token is missing or not valid."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(AuthzClientError):
    """The admin token lacks the permission the call needs."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(AuthzClientError):
    """No server answered, or it could not serve the call now."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(AuthzClientError):
    """The call did not finish within its deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ServerError(AuthzClientError):
    """Any other status (INTERNAL, UNKNOWN, ...): a server fault, not a request fault."""


_BY_CODE: dict[grpc.StatusCode, type[AuthzClientError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        Aborted,
        FailedPrecondition,
        Unauthenticated,
        PermissionDenied,
        Unavailable,
        DeadlineExceeded,
    )
}


def error_from_rpc(error: grpc.RpcError) -> AuthzClientError:
    """The typed error for a failed call, with field violations when the server sent them."""
    call: grpc.Call = error  # type: ignore[assignment]  # every RpcError grpc raises is a Call
    code = call.code()
    cls = _BY_CODE.get(code, ServerError)
    failure = cls(call.details() or code.name.lower(), _violations(call))
    if cls is ServerError:
        failure.code = code
    return failure


def _violations(call: grpc.Call) -> tuple[FieldViolation, ...]:
    try:
        status = rpc_status.from_call(call)
    except ValueError:
        return ()
    if status is None:
        return ()
    found: list[FieldViolation] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            found += [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
    return tuple(found)
