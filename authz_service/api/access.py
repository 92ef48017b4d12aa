"""Admin calls, observed: one access log line and one count per call, by RPC and status code.

The line names the RPC, its status code, the acting admin's subject (empty when the caller
was not authenticated), the entry it touched, the peer and the duration. It never holds a
request's fields: a create or rotate carries a token, and an id a caller typed is logged only
when it has the form of an entry id.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from typing import Any, TypeVar

import grpc

from ._status import Handler, abort_for, code_of

log = logging.getLogger("authz_service.access")

Response = TypeVar("Response")
_ENTRY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class AdminCalls:
    """Finished admin calls counted by (RPC, status code name), for the metrics collector."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def record(
        self,
        rpc: str,
        code: grpc.StatusCode,
        *,
        subject: str,
        entry_id: str,
        peer: str,
        seconds: float,
    ) -> None:
        """Count the call and write its access line."""
        key = (rpc, code.name)
        self.counts[key] = self.counts.get(key, 0) + 1
        who = subject or "no authenticated admin"
        what = f" entry {entry_id}" if entry_id else ""
        log.info(
            "admin %s %s by %s%s in %.1f ms",
            rpc,
            code.name,
            who,
            what,
            seconds * 1000,
            extra={
                "rpc": rpc,
                "code": code.name,
                "subject": subject,
                "entry_id": entry_id,
                "peer": peer,
                "duration_ms": round(seconds * 1000, 3),
            },
        )


def observed_admin_call(handler: Handler[Response]) -> Handler[Response]:
    """Wrap an AdminServicer method: errors end the call through `abort_for`, and every call,
    failed or not, is counted and logged by the servicer's `calls` (an AdminCalls)."""
    rpc = handler.__name__

    @functools.wraps(handler)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Response:
        started = time.perf_counter()

        def record(code: grpc.StatusCode, response: Any) -> None:
            # The acting admin, if its token was verified (a refused or unknown one names none).
            acting = self.identify(context)
            self.calls.record(
                rpc,
                code,
                subject=acting[1] if acting else "",
                entry_id=_entry_id(request, response),
                peer=context.peer() or "",
                seconds=time.perf_counter() - started,
            )

        try:
            response = await handler(self, request, context)
        except Exception as error:  # noqa: BLE001 (mapped, never leaked, by abort_for)
            record(code_of(error), None)
            await abort_for(context, error, rpc)
        record(grpc.StatusCode.OK, response)
        return response

    return wrapper


def _entry_id(request: Any, response: Any) -> str:
    """The id of the entry the call touched: the response's, else a well-formed requested one."""
    if response is not None:
        return str(getattr(response, "id", ""))
    if "entry" in request.DESCRIPTOR.fields_by_name:
        requested = str(request.entry.id)
    else:
        requested = str(getattr(request, "id", ""))
    return requested if _ENTRY_ID.fullmatch(requested) else ""
