"""Adapters at the edge: the SQLite store (and the watch on its file), the argon2 hasher and
the server key file."""

from .argon2_hasher import Argon2Hasher
from .file_watch import DatabaseFileWatch
from .server_key import ServerKeyError, load_or_create_key
from .sqlite_store import SqliteStore

__all__ = [
    "Argon2Hasher",
    "DatabaseFileWatch",
    "ServerKeyError",
    "SqliteStore",
    "load_or_create_key",
]
