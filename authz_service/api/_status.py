"""The one place where the service's errors become gRPC statuses.

INVALID_ARGUMENT carries google.rpc.BadRequest field violations (via grpcio-status), so clients
can point at the bad field. Unexpected errors become INTERNAL with a fixed message; the log
line names the exception type and where it happened, never its message (it might quote input).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from authz_service.core.errors import (
    Aborted,
    AlreadyExists,
    AuthzError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger("authz_service.api")

_CODES: dict[type[AuthzError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Aborted: grpc.StatusCode.ABORTED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}

Response = TypeVar("Response")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Response]]


def code_of(error: Exception) -> grpc.StatusCode:
    """The gRPC status code `error` ends a call with: INTERNAL for anything unexpected."""
    return _CODES.get(type(error), grpc.StatusCode.INTERNAL)  # type: ignore[arg-type]


def status_of(error: AuthzError) -> grpc.Status:
    """The gRPC status (with BadRequest details where it fits) for one of our errors."""
    code = _CODES.get(type(error), grpc.StatusCode.INTERNAL)
    status = status_pb2.Status(code=code.value[0], message=str(error) or code.name.lower())
    if isinstance(error, InvalidArgument):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
        status.details.append(detail)
    return rpc_status.to_status(status)


async def abort_for(
    context: grpc.aio.ServicerContext[Any, Any], error: Exception, where: str
) -> NoReturn:
    """End the call with the status `error` maps to; INTERNAL, logged safely, if unexpected."""
    if isinstance(error, AuthzError):
        status = status_of(error)
    else:
        frames = "".join(traceback.format_tb(error.__traceback__))
        log.error("unexpected %s in %s\n%s", type(error).__name__, where, frames)
        status = rpc_status.to_status(
            status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
        )
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("context.abort always raises")  # pragma: no cover
