"""Server settings, from flags or the environment (DESIGN section 5), checked before start."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .adapters.argon2_hasher import MEMORY_COST_KIB, TIME_COST
from .adapters.stores import is_postgresql, sqlite_path, store_problem
from .core.rules import token_problem
from .logs import FORMATS

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_DB = Path("data") / "authz.db"
MAX_WORKERS = 64
# A PostgreSQL replica's lease (DESIGN section 8): seconds, and the range accepted.
DEFAULT_REPLICA_LEASE = 2.0
_LEASE_RANGE = (0.5, 60.0)
_LISTEN = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})")


class SettingsError(Exception):
    """A setting is unusable; the message is one line naming it and what to do."""


@dataclass(frozen=True)
class Settings:
    """Everything `authz-service serve` needs to start."""

    listen: str = DEFAULT_LISTEN
    # AUTHZ_DB as given: the store factory (adapters.stores) reads it.
    db: str = str(DEFAULT_DB)
    server_key_file: Path | None = None
    # repr=False: settings may be logged; the bootstrap token never is.
    bootstrap_token: str = field(default="", repr=False)
    log_level: str = "INFO"
    # "json" (one object per line), "text", or "auto": text on a terminal, else JSON.
    log_format: str = "auto"
    metrics_listen: str = ""
    # AUTHZ_ADMIN_LISTEN: when set, AdminService is served there only, not on `listen`.
    admin_listen: str = ""
    # TLS files (PEM); both cert and key, or neither. A client CA turns on mTLS.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    argon2_time_cost: int = TIME_COST
    argon2_memory_kib: int = MEMORY_COST_KIB
    cache_size: int = 10_000
    hash_workers: int = max(1, (os.cpu_count() or 2) - 1)
    grace_seconds: float = 10.0
    # Processes serving one port (AUTHZ_WORKERS / --workers).
    workers: int = 1
    # With PostgreSQL: how long a replica that lost the database keeps answering from its
    # cache (AUTHZ_REPLICA_LEASE), and the file holding the database password
    # (AUTHZ_DB_PASSWORD_FILE; never in the URL, which is logged).
    replica_lease: float = DEFAULT_REPLICA_LEASE
    db_password_file: Path | None = None

    @property
    def postgresql(self) -> bool:
        """Whether AUTHZ_DB is a PostgreSQL URL (else a SQLite file)."""
        return is_postgresql(self.db)

    @property
    def db_path(self) -> Path:
        """The SQLite file AUTHZ_DB names."""
        return sqlite_path(self.db)

    @property
    def key_path(self) -> Path:
        """The server key file: AUTHZ_SERVER_KEY_FILE, or `server.key` beside the SQLite file."""
        return self.server_key_file or self.db_path.parent / "server.key"


def load_settings(
    *,
    listen: str | None,
    db: str | None,
    server_key_file: str | None,
    bootstrap_token_file: str | None,
    log_level: str | None,
    environ: Mapping[str, str],
    metrics_listen: str | None = None,
    admin_listen: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_client_ca: str | None = None,
    log_format: str | None = None,
    workers: str | None = None,
) -> Settings:
    """Settings from flags (when given) over the environment over defaults."""
    listen = _address(
        "AUTHZ_LISTEN/--listen", listen or environ.get("AUTHZ_LISTEN") or DEFAULT_LISTEN
    )
    metrics = metrics_listen or environ.get("AUTHZ_METRICS_LISTEN") or ""
    if metrics:
        _address("AUTHZ_METRICS_LISTEN/--metrics-listen", metrics)
    level = (log_level or environ.get("AUTHZ_LOG_LEVEL") or "INFO").upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError("AUTHZ_LOG_LEVEL/--log-level: must be DEBUG, INFO, WARNING or ERROR")
    log_format = (log_format or environ.get("AUTHZ_LOG_FORMAT") or "auto").lower()
    if log_format not in FORMATS:
        raise SettingsError("AUTHZ_LOG_FORMAT/--log-format: must be auto, json or text")
    key_file = server_key_file or environ.get("AUTHZ_SERVER_KEY_FILE")
    admin = admin_listen or environ.get("AUTHZ_ADMIN_LISTEN") or ""
    if admin:
        _address("AUTHZ_ADMIN_LISTEN/--admin-listen", admin)
        if admin == listen and not admin.endswith(":0"):
            raise SettingsError(
                "AUTHZ_ADMIN_LISTEN/--admin-listen: must differ from AUTHZ_LISTEN; "
                "leave it unset to serve AdminService on AUTHZ_LISTEN"
            )
    cert, key, client_ca = (
        flag or environ.get(name) or None
        for flag, name in (
            (tls_cert, "AUTHZ_TLS_CERT"),
            (tls_key, "AUTHZ_TLS_KEY"),
            (tls_client_ca, "AUTHZ_TLS_CLIENT_CA"),
        )
    )
    if bool(cert) != bool(key):
        raise SettingsError(
            "AUTHZ_TLS_CERT/--tls-cert and AUTHZ_TLS_KEY/--tls-key: give both (TLS) or neither"
        )
    if client_ca and not cert:
        raise SettingsError(
            "AUTHZ_TLS_CLIENT_CA/--tls-client-ca: client certificates need TLS; "
            "set AUTHZ_TLS_CERT and AUTHZ_TLS_KEY too"
        )
    db = db or environ.get("AUTHZ_DB") or str(DEFAULT_DB)
    if problem := store_problem(db):
        raise SettingsError(f"AUTHZ_DB/--db: {problem}")
    password_file = environ.get("AUTHZ_DB_PASSWORD_FILE") or None
    if is_postgresql(db) and not key_file:
        # Lookup tags are keyed: replicas with different keys would not find each other's
        # entries, so the key is one file that every replica is given.
        raise SettingsError(
            "AUTHZ_SERVER_KEY_FILE/--server-key-file: required with a postgresql:// AUTHZ_DB,"
            " so that every replica uses the same key (it is created there if missing)"
        )
    if password_file and not is_postgresql(db):
        raise SettingsError("AUTHZ_DB_PASSWORD_FILE: only a postgresql:// AUTHZ_DB takes one")
    return Settings(
        listen=listen,
        db=db,
        server_key_file=Path(key_file) if key_file else None,
        bootstrap_token=_bootstrap_token(
            bootstrap_token_file or environ.get("AUTHZ_BOOTSTRAP_TOKEN_FILE"), environ
        ),
        log_level=level,
        log_format=log_format,
        metrics_listen=metrics,
        admin_listen=admin,
        tls_cert=Path(cert) if cert else None,
        tls_key=Path(key) if key else None,
        tls_client_ca=Path(client_ca) if client_ca else None,
        argon2_time_cost=_number(environ, "AUTHZ_ARGON2_TIME_COST", TIME_COST, 1),
        argon2_memory_kib=_number(environ, "AUTHZ_ARGON2_MEMORY_KIB", MEMORY_COST_KIB, 8),
        workers=_workers(workers or environ.get("AUTHZ_WORKERS") or "1"),
        replica_lease=_lease(environ.get("AUTHZ_REPLICA_LEASE", "")),
        db_password_file=Path(password_file) if password_file else None,
    )


def _lease(text: str) -> float:
    if not text:
        return DEFAULT_REPLICA_LEASE
    low, high = _LEASE_RANGE
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not low <= seconds <= high:  # also refuses nan
        raise SettingsError(
            f"AUTHZ_REPLICA_LEASE: must be a number of seconds from {low:g} to {high:g}"
        )
    return seconds


def _workers(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
        raise SettingsError(
            f"AUTHZ_WORKERS/--workers: must be a whole number from 1 to {MAX_WORKERS}"
        )
    return int(text)


def _address(name: str, value: str) -> str:
    match = _LISTEN.fullmatch(value)
    if match is None:
        raise SettingsError(
            f"{name}: cannot parse {value!r}; expected HOST:PORT,"
            " e.g. 127.0.0.1:50051 or [::1]:50051"
        )
    if int(match["port"]) > 65535:  # the largest TCP port
        raise SettingsError(f"{name}: port {match['port']} out of range (0 to 65535)")
    return value


def _number(environ: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    text = environ.get(name, "")
    if not text:
        return default
    if not text.isdigit() or int(text) < minimum:
        raise SettingsError(f"{name}: must be a whole number of at least {minimum}")
    return int(text)


def _bootstrap_token(path: str | None, environ: Mapping[str, str]) -> str:
    if path:
        # The file wins over AUTHZ_BOOTSTRAP_TOKEN: a container's secret mount names a file.
        source = "AUTHZ_BOOTSTRAP_TOKEN_FILE/--bootstrap-token-file"
        try:
            token = Path(path).read_text(encoding="utf-8").strip("\r\n")
        except OSError as exc:
            raise SettingsError(f"{source}: cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise SettingsError(f"{source}: cannot read {path}: not UTF-8 text") from None
    else:
        source = "AUTHZ_BOOTSTRAP_TOKEN"
        token = environ.get(source, "")
        if not token:
            return ""
    problem = token_problem(token)
    if problem is not None:
        raise SettingsError(f"{source}: the bootstrap token {problem}")
    return token
