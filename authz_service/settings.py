"""Server settings, from flags or the environment (DESIGN section 5), checked before start."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .core.rules import token_problem

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_DB = Path("data") / "authz.db"
_LISTEN = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})")


class SettingsError(Exception):
    """A setting is unusable; the message is one line naming it and what to do."""


@dataclass(frozen=True)
class Settings:
    """Everything `authz-service serve` needs to start."""

    listen: str = DEFAULT_LISTEN
    db_path: Path = DEFAULT_DB
    server_key_file: Path | None = None
    # repr=False: settings may be logged; the bootstrap token never is.
    bootstrap_token: str = field(default="", repr=False)
    log_level: str = "INFO"
    cache_size: int = 10_000
    hash_workers: int = max(1, (os.cpu_count() or 2) - 1)
    grace_seconds: float = 10.0

    @property
    def key_path(self) -> Path:
        """The server key file: AUTHZ_SERVER_KEY_FILE, or `server.key` beside the database."""
        return self.server_key_file or self.db_path.parent / "server.key"


def load_settings(
    *,
    listen: str | None,
    db: str | None,
    server_key_file: str | None,
    bootstrap_token_file: str | None,
    log_level: str | None,
    environ: Mapping[str, str],
) -> Settings:
    """Settings from flags (when given) over the environment over defaults."""
    listen = listen or environ.get("AUTHZ_LISTEN") or DEFAULT_LISTEN
    match = _LISTEN.fullmatch(listen)
    if match is None or int(match["port"]) > 65535:
        raise SettingsError(
            f"AUTHZ_LISTEN/--listen: cannot parse {listen!r}; expected HOST:PORT,"
            " e.g. 127.0.0.1:50051 or [::1]:50051"
        )
    level = (log_level or environ.get("AUTHZ_LOG_LEVEL") or "INFO").upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError("AUTHZ_LOG_LEVEL/--log-level: must be DEBUG, INFO, WARNING or ERROR")
    key_file = server_key_file or environ.get("AUTHZ_SERVER_KEY_FILE")
    return Settings(
        listen=listen,
        db_path=Path(db or environ.get("AUTHZ_DB") or DEFAULT_DB),
        server_key_file=Path(key_file) if key_file else None,
        bootstrap_token=_bootstrap_token(bootstrap_token_file, environ),
        log_level=level,
    )


def _bootstrap_token(path: str | None, environ: Mapping[str, str]) -> str:
    if path:
        source = "--bootstrap-token-file"
        try:
            token = Path(path).read_text(encoding="utf-8").strip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{source}: cannot read {path}: {exc}") from None
    else:
        source = "AUTHZ_BOOTSTRAP_TOKEN"
        token = environ.get(source, "")
        if not token:
            return ""
    problem = token_problem(token)
    if problem is not None:
        raise SettingsError(f"{source}: the bootstrap token {problem}")
    return token
