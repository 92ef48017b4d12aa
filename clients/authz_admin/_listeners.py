"""Which of the server's services a port serves, asked of its health service.

A server started with an admin listener (AUTHZ_ADMIN_LISTEN) serves AdminService there alone
and Check on its main port; a call to the wrong one is UNIMPLEMENTED. Each listener's health
service knows the services it serves, so the command line can say which port to use.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._failures import ADMIN_SERVICE, AUTHZ_SERVICE


def services_at(
    target: str, credentials: grpc.ChannelCredentials | None, timeout: float
) -> frozenset[str]:
    """The authz services the health service at `target` knows; empty when it answers none."""
    channel = (
        grpc.secure_channel(target, credentials)
        if credentials is not None
        else grpc.insecure_channel(target)
    )
    known: set[str] = set()
    with channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in (AUTHZ_SERVICE, ADMIN_SERVICE):
            try:
                health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
            except grpc.RpcError:
                continue  # NOT_FOUND: not served here; anything else: cannot tell
            known.add(service)
    return frozenset(known)
