"""The real executables as processes: grpc's own log lines stay off stderr unless the operator
asks for them (GRPC_VERBOSITY), `python -m authz_service` is `authz-service`, and settings a
server cannot start with are named for what they are."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from admin_cli import AdminCli
from server_process import ServerProcess

SERVICE_CLI = Path(sys.executable).with_name("authz-service")
# grpc's own log lines: a severity letter, the date, the time, the thread and the source file.
GRPC_LOG_LINE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]", re.M)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


@pytest.mark.parametrize(
    ("verbosity", "logged"), [(None, False), ("INFO", True)], ids=["default", "asked-for"]
)
def test_the_admin_cli_keeps_grpc_log_lines_off_stderr_unless_asked(
    server: ServerProcess,
    tmp_path: Path,
    certificate: tuple[Path, Path],
    verbosity: str | None,
    logged: bool,
) -> None:
    cli = AdminCli(server.target, tmp_path)
    cli.env.pop("GRPC_VERBOSITY", None)
    asked = {"GRPC_VERBOSITY": verbosity} if verbosity else {}
    # TLS to a plaintext server: grpc logs the failed handshake at INFO.
    run = cli("list", "--tls-ca", str(certificate[0]), "--timeout", "2", env=asked)
    assert run.code == 5
    assert bool(GRPC_LOG_LINE.search(run.stderr)) is logged, run.stderr
    assert run.stderr.splitlines()[-1].startswith("authz-admin: error: no server answered")


@pytest.mark.parametrize(
    ("verbosity", "logged"), [(None, False), ("INFO", True)], ids=["default", "asked-for"]
)
def test_the_healthcheck_keeps_grpc_log_lines_off_stderr_unless_asked(
    server: ServerProcess, certificate: tuple[Path, Path], verbosity: str | None, logged: bool
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHZ_", "GRPC_"))}
    env |= {"AUTHZ_TLS_CA": str(certificate[0])} | (
        {"GRPC_VERBOSITY": verbosity} if verbosity else {}
    )
    run = subprocess.run(
        [str(SERVICE_CLI), "healthcheck", "--target", server.target, "--timeout", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert bool(GRPC_LOG_LINE.search(run.stderr)) is logged, run.stderr


@pytest.mark.parametrize(
    ("verbosity", "logged"), [(None, False), ("INFO", True)], ids=["default", "asked-for"]
)
def test_the_server_keeps_grpc_log_lines_out_of_its_log_unless_asked(
    tmp_path: Path,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    verbosity: str | None,
    logged: bool,
) -> None:
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
    cert, key = certificate
    env = {"AUTHZ_TLS_CERT": str(cert), "AUTHZ_TLS_KEY": str(key)}
    env |= {"GRPC_VERBOSITY": verbosity} if verbosity else {}
    trusted = grpc.ssl_channel_credentials(cert.read_bytes())
    server = ServerProcess(tmp_path / "authz.db", env, credentials=trusted)
    try:
        # Plaintext HTTP/2 to a TLS port: the handshake fails, and the server closes it.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as plain:
            plain.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            while plain.recv(4096):
                pass
    finally:
        assert server.stop() == 0
    assert bool(GRPC_LOG_LINE.search(server.log)) is logged, server.log


def service(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m authz_service ARGS` with no AUTHZ_ settings from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
    return subprocess.run(
        [sys.executable, "-m", "authz_service", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_python_m_authz_service_is_the_authz_service_command() -> None:
    run = service("--version")
    assert (run.returncode, run.stdout) == (0, "authz-service 0.1.0\n")
    assert service("--help").stdout.startswith("usage: authz-service ")


def test_a_listen_port_out_of_range_is_said_so() -> None:
    run = service("serve", "--listen", "127.0.0.1:99999")
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == (
        "authz-service: AUTHZ_LISTEN/--listen: port 99999 out of range (0 to 65535)\n"
    )


def test_a_database_directory_that_cannot_be_made_names_the_database_not_the_key() -> None:
    run = service("serve", "--listen", "127.0.0.1:0", "--db", "/proc/nope/a.db")
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr.startswith(
        "authz-service: AUTHZ_DB/--db: cannot create /proc/nope, the database's directory: "
    )
    assert "key" not in run.stderr
    assert len(run.stderr.splitlines()) == 1
