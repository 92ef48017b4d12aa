"""Channel credentials for a server that serves TLS, from PEM files."""

from __future__ import annotations

from pathlib import Path

import grpc

PathLike = str | Path


def tls_credentials(
    ca_file: PathLike | None = None,
    cert_file: PathLike | None = None,
    key_file: PathLike | None = None,
) -> grpc.ChannelCredentials:
    """TLS credentials for `AuthzClient(target, credentials=...)` and `AsyncAuthzClient`.

    `ca_file` is the CA (PEM) that signed the server's certificate; without it grpc's bundled
    public roots are trusted. `cert_file` and `key_file` (PEM, both or neither) are the client
    certificate a server under mTLS asks for. Raises ValueError when only one of them is given
    and OSError when a file cannot be read.
    """
    if (cert_file is None) != (key_file is None):
        raise ValueError("give both cert_file and key_file for a client certificate, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file),
        private_key=_read(key_file),
        certificate_chain=_read(cert_file),
    )


def _read(path: PathLike | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()
