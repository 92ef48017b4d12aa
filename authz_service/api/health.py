"""`grpc.health.v1.Health`: grpcio-health-checking's servicer, with `List` answered.

The library's asyncio servicer leaves `List` to the generated base class, which raises: any
caller could then write an ERROR line with a traceback per call.
"""

from __future__ import annotations

from typing import Any

from grpc_health.v1 import health, health_pb2


class HealthServicer(health.aio.HealthServicer):  # type: ignore[misc,name-defined]  # untyped
    """Check and Watch as the library answers them; List from the same statuses."""

    async def List(  # noqa: N802 (gRPC method name)
        self, request: health_pb2.HealthListRequest, context: Any
    ) -> health_pb2.HealthListResponse:
        """Every service's status: a handful, set by the server itself, never by a caller."""
        # _server_status is the library's table of statuses (declared on its class), which
        # set() and enter_graceful_shutdown() keep.
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._server_status.items()
            }
        )
