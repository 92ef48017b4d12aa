"""The server key: 32 random bytes in a file beside the database, never inside it.

It keys the HMAC behind lookup tags and page tokens. Created on first start with mode 0600;
a key readable by group or others is refused, since with it a stolen database could be
searched for tokens by tag.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

KEY_BYTES = 32


class ServerKeyError(Exception):
    """The server key file is missing, malformed or too widely readable."""


def load_or_create_key(path: Path) -> bytes:
    """The key in `path`, created (mode 0600) when the file does not exist yet."""
    return open_key(path)[0]


def open_key(path: Path) -> tuple[bytes, bool]:
    """The key in `path`, and whether this call created the file (mode 0600)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path), False
    except OSError as exc:
        raise ServerKeyError(f"cannot create server key file {path}: {exc.strerror}") from None
    key = secrets.token_bytes(KEY_BYTES)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
        out.flush()
        os.fsync(out.fileno())
    # The new directory entry must survive a power loss too, or entries written later would
    # outlive the key that makes their tags meaningful.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return key, True


def _read_key(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        key = path.read_bytes()
    except OSError as exc:
        raise ServerKeyError(f"cannot read server key file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ServerKeyError(
            f"server key file {path} is accessible by group or others; run: chmod 600 {path}"
        )
    if len(key) != KEY_BYTES:
        raise ServerKeyError(f"server key file {path} must hold exactly {KEY_BYTES} bytes")
    return key
