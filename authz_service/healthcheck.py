"""`authz-service healthcheck`: asks the server's grpc.health.v1 service whether it is SERVING.

Made for a container's HEALTHCHECK, so the image needs no downloaded probe binary. It reads
the same environment as `serve`: the target follows AUTHZ_LISTEN (a wildcard host becomes
loopback), and when the server serves TLS the probe does too. Exit code 0 means SERVING;
anything else, including no answer within the timeout, is 1 (Docker reserves 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .settings import DEFAULT_LISTEN

DEFAULT_TIMEOUT = 3.0
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}  # noqa: S104 (mapped away)
# What an answer without details means, from grpc.health.v1's own rules.
_MEANINGS = {
    grpc.StatusCode.NOT_FOUND: "the server serves no service of that name (--service)",
    grpc.StatusCode.UNIMPLEMENTED: "the server does not serve grpc.health.v1",
}


class ProbeError(Exception):
    """The probe cannot be made as configured (a TLS file is missing or half given)."""


@dataclass(frozen=True)
class Probe:
    """Where to ask and how: the target, and TLS material when the server serves TLS."""

    target: str
    service: str = ""
    timeout: float = DEFAULT_TIMEOUT
    tls: bool = False
    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    server_name: str = ""

    def ask(self) -> tuple[bool, str]:
        """(True, "SERVING") when the server says so; else False and what it said instead."""
        options = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
        if self.tls:
            credentials = grpc.ssl_channel_credentials(
                self.root_certificates, self.private_key, self.certificate_chain
            )
            channel = grpc.secure_channel(self.target, credentials, options)
        else:
            channel = grpc.insecure_channel(self.target, options)
        with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                answer = stub.Check(
                    health_pb2.HealthCheckRequest(service=self.service), timeout=self.timeout
                )
            except grpc.RpcError as error:
                code = error.code()
                details = error.details() or _MEANINGS.get(code, "no details given")
                return False, f"{code.name}: {details}"
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return answer.status == health_pb2.HealthCheckResponse.SERVING, status


def probe_target(listen: str) -> str:
    """The address to probe a server listening on `listen`: wildcards become loopback."""
    host, _, port = listen.rpartition(":")
    return f"{_WILDCARDS.get(host, host)}:{port}"


def load_probe(
    *, target: str | None, service: str, timeout: float, environ: Mapping[str, str]
) -> Probe:
    """The probe for the server these settings describe.

    TLS is on when the server's AUTHZ_TLS_CERT is set or AUTHZ_TLS_CA is. The probe trusts
    AUTHZ_TLS_CA, else the server's own certificate. It presents AUTHZ_TLS_CLIENT_CERT and
    AUTHZ_TLS_CLIENT_KEY, else, when the server requires client certificates
    (AUTHZ_TLS_CLIENT_CA), the server's own certificate and key (which then must be allowed
    for client authentication). AUTHZ_TLS_SERVER_NAME is the name the server's certificate is
    checked against, when the target's host is not in it.
    """
    target = target or probe_target(environ.get("AUTHZ_LISTEN") or DEFAULT_LISTEN)
    server_cert = environ.get("AUTHZ_TLS_CERT", "")
    ca = environ.get("AUTHZ_TLS_CA", "")
    if not (server_cert or ca):
        return Probe(target, service, timeout)
    identity = ("AUTHZ_TLS_CLIENT_CERT", "AUTHZ_TLS_CLIENT_KEY")
    if bool(environ.get(identity[0])) != bool(environ.get(identity[1])):
        raise ProbeError("AUTHZ_TLS_CLIENT_CERT and AUTHZ_TLS_CLIENT_KEY: give both or neither")
    if not environ.get(identity[0]) and environ.get("AUTHZ_TLS_CLIENT_CA"):
        identity = ("AUTHZ_TLS_CERT", "AUTHZ_TLS_KEY")
    return Probe(
        target,
        service,
        timeout,
        tls=True,
        root_certificates=_read(environ, "AUTHZ_TLS_CA" if ca else "AUTHZ_TLS_CERT"),
        certificate_chain=_read(environ, identity[0]),
        private_key=_read(environ, identity[1]),
        server_name=environ.get("AUTHZ_TLS_SERVER_NAME", ""),
    )


def _read(environ: Mapping[str, str], setting: str) -> bytes | None:
    path = environ.get(setting)
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ProbeError(f"{setting}: cannot read {path}: {exc.strerror}") from None
