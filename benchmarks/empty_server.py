"""The baseline: a grpc.aio server of the same kind whose Check does no work at all.

It answers every Check with one pre-built ALLOW of the same size as the real server's, so the
two differ only by the service's own work per call.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc

from authz.v1 import authz_pb2, authz_pb2_grpc
from authz_service.registration import GenericOnly
from authz_service.transport import server_options

ANSWER = authz_pb2.CheckResponse(
    decision=authz_pb2.ALLOW,
    http_status=200,
    subject="bench-warm-0",
    entry_id="00000000-0000-4000-8000-000000000000",
)


class EmptyAuthz(authz_pb2_grpc.AuthzServiceServicer):
    """Check that returns a constant."""

    async def Check(  # noqa: N802 (gRPC method name)
        self, request: authz_pb2.CheckRequest, context: object
    ) -> authz_pb2.CheckResponse:
        return ANSWER


async def serve(listen: str, reuse_port: bool) -> None:
    # The service's own connection options, so the floor pays what the service pays.
    server = grpc.aio.server(options=server_options({"grpc.so_reuseport": int(reuse_port)}))
    # Registered as the real server registers its services (see GenericOnly).
    authz_pb2_grpc.add_AuthzServiceServicer_to_server(EmptyAuthz(), GenericOnly(server))  # type: ignore[no-untyped-call]
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"serving on 127.0.0.1:{port}", file=sys.stderr, flush=True)  # noqa: T201
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument(
        "--reuse-port", action="store_true", help="share the port with other processes"
    )
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.reuse_port))
