"""TLS material for the gRPC listeners, checked at startup.

grpc takes certificates as bytes and reports a bad one only when a client connects, in its
own multi-line log. The files are therefore loaded with the `ssl` module first, so a missing
file, a file that is no PEM certificate or key, a key that does not match its certificate or
an unusable client CA ends the start with one line naming the setting and the file.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

import grpc

CERT_SETTING = "AUTHZ_TLS_CERT/--tls-cert"
KEY_SETTING = "AUTHZ_TLS_KEY/--tls-key"
CLIENT_CA_SETTING = "AUTHZ_TLS_CLIENT_CA/--tls-client-ca"


class TlsError(Exception):
    """A TLS file is missing, unreadable, not PEM, or does not match its partner."""


@dataclass(frozen=True)
class ServerTls:
    """The server's certificate chain and key, and the CA its clients must present, if any."""

    cert_chain: bytes
    # repr=False: the settings and this object may be logged; a private key never is.
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """grpc's server credentials for these files."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


def load_server_tls(cert: Path, key: Path, client_ca: Path | None = None) -> ServerTls:
    """Read and check the server's TLS files; raises TlsError with one line saying what is
    wrong (never the key's contents)."""
    cert_chain = _read(CERT_SETTING, cert)
    private_key = _read(KEY_SETTING, key)
    _check_certificates(CERT_SETTING, cert)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=_refuse_encrypted_key)
    except _EncryptedKey:
        raise TlsError(
            f"{KEY_SETTING}: {key} is encrypted; give the key without a passphrase "
            "(protect it with file permissions or a secret mount instead)"
        ) from None
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise TlsError(
                f"{KEY_SETTING}: {key} does not match the certificate in {cert}"
            ) from None
        raise TlsError(f"{KEY_SETTING}: {key} holds no PEM private key") from None
    ca = None
    if client_ca is not None:
        ca = _read(CLIENT_CA_SETTING, client_ca)
        _check_certificates(CLIENT_CA_SETTING, client_ca)
    return ServerTls(cert_chain, private_key, ca)


class _EncryptedKey(Exception):
    pass


def _refuse_encrypted_key() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for a passphrase.
    raise _EncryptedKey


def _read(setting: str, path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    if not data.strip():
        raise TlsError(f"{setting}: {path} is empty")
    return data


def _check_certificates(setting: str, path: Path) -> None:
    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError:
        raise TlsError(f"{setting}: {path} holds no PEM certificate") from None
