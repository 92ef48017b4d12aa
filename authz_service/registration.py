"""How the server registers its gRPC services: as generic handlers only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc


class GenericOnly:
    """Registers a service's methods as generic handlers only, not as registered methods.

    grpc.aio's server loop keeps one pending request per registered method, plus one for all
    generic calls, and waits on all of them for every call it accepts: each registered method
    costs every call 4-6k instructions (callgrind), more than a generic handler's lookup
    (a dict get, Check's service asked first). So no method is registered. The benchmark's
    empty-handler floors register through this too, so they do not pay a cost the service
    avoids.
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(
        self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        """Pass the generic handlers through."""
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: object) -> None:
        """Leave the service out of the registered methods."""
