"""The Envoy baseline: a grpc.aio ext_authz server whose Check does no work at all.

It answers every `envoy.service.auth.v3.Authorization/Check` with one pre-built OK carrying the
same identity headers, header removal and dynamic metadata as the real server's, so the two
differ only by the service's own work per call.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz_service.api.envoy import allow_response
from authz_service.core.decision import Decision
from authz_service.registration import GenericOnly
from authz_service.transport import server_options

ANSWER = allow_response(
    Decision(True, 0, 200, "", "bench-warm-0", "00000000-0000-4000-8000-000000000000"),
    forward_authorization=False,
)


class EmptyExtAuthz:
    """Check that returns a constant."""

    async def Check(  # noqa: N802 (gRPC method name)
        self, request: external_auth_pb2.CheckRequest, context: object
    ) -> external_auth_pb2.CheckResponse:
        """The pre-built OK."""
        return ANSWER


async def serve(listen: str) -> None:
    """Serve until killed; announce the port as the real server does."""
    # The service's own connection options, so the floor pays what the service pays.
    server = grpc.aio.server(options=server_options())
    # Registered as the real server registers its services (see GenericOnly).
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(EmptyExtAuthz(), GenericOnly(server))
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"serving on 127.0.0.1:{port}", file=sys.stderr, flush=True)  # noqa: T201
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:0")
    asyncio.run(serve(parser.parse_args().listen))
