"""TLS, mTLS and the separate admin listener, with certificates made here by `cryptography`.

A real server serves TLS from AUTHZ_TLS_CERT/AUTHZ_TLS_KEY (and requires client certificates
with AUTHZ_TLS_CLIENT_CA); the client library and `authz-admin` reach it with the matching
options, and clients without them are refused.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from authz.v1 import authz_pb2 as pb
from authz.v1 import authz_pb2_grpc
from authz_client import AuthzClient, Restriction, Unavailable, tls_credentials
from server_process import ADMIN_METADATA, BOOTSTRAP_TOKEN, ServerProcess

ADMIN_CLI = Path(sys.executable).with_name("authz-admin")


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1 and localhost, and client certificates: one
    from the CA and one from a stranger CA. Every value is a PEM file path."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path

    def server_env(self, *, mtls: bool = False) -> dict[str, str]:
        """The server's TLS settings; with `mtls`, client certificates from `ca` are required."""
        env = {"AUTHZ_TLS_CERT": str(self.server_cert), "AUTHZ_TLS_KEY": str(self.server_key)}
        if mtls:
            env["AUTHZ_TLS_CLIENT_CA"] = str(self.ca)
        return env

    def client_credentials(self) -> grpc.ChannelCredentials:
        """Trusts the CA and presents the CA's client certificate."""
        return tls_credentials(self.ca, self.client_cert, self.client_key)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    directory: Path,
    stem: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    usage: x509.ObjectIdentifier | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[Path, Path, x509.Name, ec.EllipticCurvePrivateKey]:
    """A P-256 key and a certificate for it, issued by `issuer` (self-signed CA when None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(stem)
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    certificate = builder.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path, subject, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, _, ca_name, ca_key = _issue(directory, "ca", None)
    server_cert, server_key, _, _ = _issue(
        directory,
        "server",
        (ca_name, ca_key),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_cert, client_key, _, _ = _issue(
        directory, "client", (ca_name, ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    _, _, stranger_ca_name, stranger_ca_key = _issue(directory, "stranger-ca", None)
    stranger_cert, stranger_key, _, _ = _issue(
        directory,
        "stranger",
        (stranger_ca_name, stranger_ca_key),
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    return Pki(ca, server_cert, server_key, client_cert, client_key, stranger_cert, stranger_key)


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server serving TLS, without asking for client certificates."""
    db = tmp_path_factory.mktemp("tls") / "authz.db"
    server = ServerProcess(db, pki.server_env(), credentials=tls_credentials(pki.ca))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server serving TLS that requires a client certificate from the test CA."""
    db = tmp_path_factory.mktemp("mtls") / "authz.db"
    server = ServerProcess(db, pki.server_env(mtls=True), credentials=pki.client_credentials())
    yield server
    server.stop()


def _admin_cli(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
    environ["AUTHZ_ADMIN_TOKEN"] = BOOTSTRAP_TOKEN
    done = subprocess.run(
        [str(ADMIN_CLI), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ | (env or {}),
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def test_the_client_library_checks_and_administers_over_tls(
    tls_server: ServerProcess, pki: Pki
) -> None:
    credentials = tls_credentials(ca_file=pki.ca)
    with AuthzClient(
        tls_server.target, admin_token=BOOTSTRAP_TOKEN, credentials=credentials, timeout=10
    ) as client:
        entry = client.create_entry(
            "tls-library", "tls-library-token-1", restrictions=[Restriction("catalog")]
        )
        result = client.check("tls-library-token-1", "catalog")
    assert (result.allowed, result.subject, result.entry_id) == (True, "tls-library", entry.id)
    assert "serving on" in tls_server.log
    assert "TLS" in tls_server.log


def test_authz_admin_works_over_tls_with_the_flag_and_with_the_variable(
    tls_server: ServerProcess, pki: Pki
) -> None:
    target = ["--target", tls_server.target]
    code, output = _admin_cli(
        "create", "tls-cli", "--allow", "catalog", *target, "--tls-ca", str(pki.ca),
        stdin="tls-cli-token-123",
    )  # fmt: skip
    assert code == 0, output
    code, output = _admin_cli(
        "check", "catalog", *target, stdin="tls-cli-token-123", env={"AUTHZ_TLS_CA": str(pki.ca)}
    )
    assert code == 0, output
    assert "ALLOW" in output
    assert "tls-cli" in output


def test_a_plaintext_client_is_refused_on_a_tls_port(tls_server: ServerProcess) -> None:
    with AuthzClient(tls_server.target, timeout=5) as client, pytest.raises(Unavailable):
        client.check("any-token-at-all", "catalog")
    code, output = _admin_cli("list", "--target", tls_server.target)
    assert code == 5
    assert "--tls-ca" in output


def test_a_client_that_does_not_trust_the_server_certificate_is_refused(
    tls_server: ServerProcess, pki: Pki
) -> None:
    # The stranger CA did not sign the server's certificate.
    stranger_ca = pki.stranger_cert.with_name("stranger-ca.pem")
    credentials = tls_credentials(ca_file=stranger_ca)
    with (
        AuthzClient(tls_server.target, credentials=credentials, timeout=5) as client,
        pytest.raises(Unavailable),
    ):
        client.check("any-token-at-all", "catalog")


def test_under_mtls_a_client_with_a_certificate_from_the_ca_is_served(
    mtls_server: ServerProcess, pki: Pki
) -> None:
    with AuthzClient(
        mtls_server.target,
        admin_token=BOOTSTRAP_TOKEN,
        credentials=pki.client_credentials(),
        timeout=10,
    ) as client:
        client.create_entry("mtls-library", "mtls-library-token", unrestricted=True)
        result = client.check("mtls-library-token", "catalog")
    assert (result.allowed, result.subject) == (True, "mtls-library")
    assert "client certificates required" in mtls_server.log


@pytest.mark.parametrize("who", ["no certificate", "a stranger's certificate", "plaintext"])
def test_under_mtls_a_client_without_a_certificate_from_the_ca_is_refused(
    mtls_server: ServerProcess, pki: Pki, who: str
) -> None:
    credentials = {
        "no certificate": tls_credentials(pki.ca),
        "a stranger's certificate": tls_credentials(pki.ca, pki.stranger_cert, pki.stranger_key),
        "plaintext": None,
    }[who]
    with (
        AuthzClient(mtls_server.target, credentials=credentials, timeout=5) as client,
        pytest.raises(Unavailable),
    ):
        client.check("any-token-at-all", "catalog")


def test_authz_admin_under_mtls_needs_its_client_certificate(
    mtls_server: ServerProcess, pki: Pki
) -> None:
    target = ["--target", mtls_server.target, "--tls-ca", str(pki.ca)]
    code, output = _admin_cli("list", "--json", *target)
    assert code == 5, output
    code, output = _admin_cli(
        "list", "--json", *target, "--tls-cert", str(pki.client_cert), "--tls-key",
        str(pki.client_key),
    )  # fmt: skip
    assert code == 0, output
    assert "bootstrap-admin" in output
    env = {
        "AUTHZ_TLS_CLIENT_CERT": str(pki.client_cert),
        "AUTHZ_TLS_CLIENT_KEY": str(pki.client_key),
    }
    code, output = _admin_cli("get", "bootstrap-admin", *target, env=env)
    assert code == 0, output


def test_authz_admin_refuses_a_client_certificate_without_its_key(pki: Pki) -> None:
    code, output = _admin_cli(
        "list", "--target", "127.0.0.1:1", "--tls-ca", str(pki.ca), "--tls-cert",
        str(pki.client_cert),
    )  # fmt: skip
    assert code == 2
    assert "--tls-key" in output


def test_tls_credentials_wants_both_certificate_and_key(pki: Pki) -> None:
    with pytest.raises(ValueError, match="both"):
        tls_credentials(pki.ca, cert_file=pki.client_cert)
    with pytest.raises(FileNotFoundError):
        tls_credentials(pki.ca.with_name("missing.pem"))


def test_with_an_admin_listener_admin_calls_are_served_there_only(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "authz.db", {"AUTHZ_ADMIN_LISTEN": "127.0.0.1:0"})
    try:
        assert server.admin_port not in (0, server.port)
        on_main = authz_pb2_grpc.AdminServiceStub(server.channel)
        with pytest.raises(grpc.RpcError) as refused:
            on_main.ListEntries(pb.ListEntriesRequest(), metadata=ADMIN_METADATA, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        listed = server.admin.ListEntries(
            pb.ListEntriesRequest(), metadata=ADMIN_METADATA, timeout=10
        )
        assert [entry.subject for entry in listed.entries] == ["bootstrap-admin"]
        check_on_admin = authz_pb2_grpc.AuthzServiceStub(server.admin_channel)
        with pytest.raises(grpc.RpcError) as refused:
            check_on_admin.Check(pb.CheckRequest(token="x" * 12, plugin="catalog"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        answer = server.authz.Check(pb.CheckRequest(token=BOOTSTRAP_TOKEN, plugin="catalog"))
        assert answer.reason == "plugin_not_allowed"
    finally:
        server.stop()


def test_health_and_reflection_on_each_listener_name_only_what_it_serves(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "authz.db", None, "--admin-listen", "127.0.0.1:0")
    try:
        serving = health_pb2.HealthCheckResponse.SERVING
        for channel, served, absent in (
            (server.channel, "authz.v1.AuthzService", "authz.v1.AdminService"),
            (server.admin_channel, "authz.v1.AdminService", "authz.v1.AuthzService"),
        ):
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest()).status == serving
            request = health_pb2.HealthCheckRequest(service=served)
            assert health.Check(request).status == serving
            with pytest.raises(grpc.RpcError) as unknown:
                health.Check(health_pb2.HealthCheckRequest(service=absent))
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
            services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
            assert served in services
            assert absent not in services
        assert f"admin on 127.0.0.1:{server.admin_port}" in server.log
    finally:
        server.stop()


def test_the_admin_listener_serves_tls_too(pki: Pki, tmp_path: Path) -> None:
    env = {**pki.server_env(mtls=True), "AUTHZ_ADMIN_LISTEN": "127.0.0.1:0"}
    server = ServerProcess(tmp_path / "authz.db", env, credentials=pki.client_credentials())
    try:
        with AuthzClient(
            server.admin_target,
            admin_token=BOOTSTRAP_TOKEN,
            credentials=pki.client_credentials(),
            timeout=10,
        ) as admin:
            assert [e.subject for e in admin.list_entries()[0]] == ["bootstrap-admin"]
        with (
            AuthzClient(server.admin_target, admin_token=BOOTSTRAP_TOKEN, timeout=5) as plain,
            pytest.raises(Unavailable),
        ):
            plain.list_entries()
    finally:
        server.stop()


def _serve(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
    return subprocess.run(
        [sys.executable, "-m", "authz_service.cli", "serve", "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ | {"AUTHZ_DB": str(tmp_path / "authz.db")} | env,
        check=False,
    )


def _refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_unusable_tls_settings_are_refused_in_one_line_naming_the_setting(
    pki: Pki, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"
    cases = {
        "AUTHZ_TLS_CERT": {"AUTHZ_TLS_CERT": str(pki.server_cert)},
        "AUTHZ_TLS_CLIENT_CA": {"AUTHZ_TLS_CLIENT_CA": str(pki.ca)},
        "missing.pem": {**pki.server_env(), "AUTHZ_TLS_CERT": str(missing)},
        "no PEM certificate": {**pki.server_env(), "AUTHZ_TLS_CERT": str(junk)},
        "does not match": {**pki.server_env(), "AUTHZ_TLS_KEY": str(pki.client_key)},
        "no PEM private key": {**pki.server_env(), "AUTHZ_TLS_KEY": str(pki.server_cert)},
        "junk.pem": {**pki.server_env(), "AUTHZ_TLS_CLIENT_CA": str(junk)},
    }
    for expected, env in cases.items():
        line = _refusal(_serve(tmp_path, env))
        assert expected in line, (env, line)
        assert "BEGIN" not in line


def test_an_encrypted_tls_key_is_refused_without_a_prompt(pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    line = _refusal(_serve(tmp_path, {**pki.server_env(), "AUTHZ_TLS_KEY": str(encrypted)}))
    assert "encrypted" in line


def test_an_admin_listener_on_the_main_address_is_refused(tmp_path: Path) -> None:
    env = {"AUTHZ_LISTEN": "127.0.0.1:50999", "AUTHZ_ADMIN_LISTEN": "127.0.0.1:50999"}
    result = subprocess.run(
        [sys.executable, "-m", "authz_service.cli", "serve", "--db", str(tmp_path / "a.db")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    assert "AUTHZ_ADMIN_LISTEN" in _refusal(result)


def _healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
    return subprocess.run(
        [sys.executable, "-m", "authz_service.cli", "healthcheck", "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ | env,
        check=False,
    )


def test_the_healthcheck_speaks_tls_with_the_servers_own_settings(
    tls_server: ServerProcess, pki: Pki
) -> None:
    env = {**pki.server_env(), "AUTHZ_LISTEN": f"0.0.0.0:{tls_server.port}"}
    answer = _healthcheck(env)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == f"127.0.0.1:{tls_server.port}: SERVING"
    assert _healthcheck(env | {"AUTHZ_TLS_CA": str(pki.ca)}).returncode == 0
    plaintext = _healthcheck({"AUTHZ_LISTEN": f"127.0.0.1:{tls_server.port}"})
    assert plaintext.returncode == 1
    assert "UNAVAILABLE" in plaintext.stderr


def test_the_healthcheck_under_mtls_presents_the_client_certificate(
    mtls_server: ServerProcess, pki: Pki
) -> None:
    env = {**pki.server_env(mtls=True), "AUTHZ_LISTEN": f"127.0.0.1:{mtls_server.port}"}
    # The server's own certificate is for server authentication only: refused as a client.
    assert _healthcheck(env).returncode == 1
    client = {
        "AUTHZ_TLS_CLIENT_CERT": str(pki.client_cert),
        "AUTHZ_TLS_CLIENT_KEY": str(pki.client_key),
    }
    answer = _healthcheck(env | client)
    assert answer.returncode == 0, answer.stderr
