"""Adapters at the edge: the stores (SQLite, PostgreSQL) and the watch on them, the argon2
hasher and the server key file."""

from .argon2_hasher import Argon2Hasher
from .server_key import ServerKeyError, load_or_create_key
from .sqlite_store import SqliteStore
from .store_watch import StoreWatch

__all__ = [
    "Argon2Hasher",
    "ServerKeyError",
    "SqliteStore",
    "StoreWatch",
    "load_or_create_key",
]
