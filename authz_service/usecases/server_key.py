"""The server key is bound to its database (DESIGN section 9).

Lookup tags are keyed by the server key, so a database checked with another key answers
`unknown_token` to every token. The database keeps the key's fingerprint (an HMAC of a fixed
label, never the key); a server whose key does not match, or whose key was just created for a
database that already holds entries (a restore without its key file), refuses to start.
"""

from __future__ import annotations

from authz_service.core.ports import EntryStore
from authz_service.core.tokens import key_fingerprint


class WrongServerKey(Exception):
    """The server key is not the one this database belongs to; the message says what to do."""


async def bind_server_key(store: EntryStore, key: bytes, *, created: bool) -> None:
    """Check `key` against the fingerprint the database keeps, keeping it on first use.

    `created`: the key file was made by this start. A database that holds entries but no
    fingerprint (made before fingerprints were kept) takes the key it is given, unless that
    key is new: then it cannot be the key its entries were made with.
    """
    fingerprint = key_fingerprint(key)
    kept = await store.key_fingerprint()
    if kept is None and not (created and await store.holds_entries()):
        kept = await store.keep_key_fingerprint(fingerprint)
    if kept == fingerprint:
        return
    if created:
        raise WrongServerKey(
            "server key: a new key file was just created, but the database holds entries"
            " made with another key; restore the server key file that belongs to this"
            " database (see AUTHZ_SERVER_KEY_FILE)"
        )
    raise WrongServerKey(
        "server key: this database belongs to another server key; restore the server key"
        " file that belongs to it (see AUTHZ_SERVER_KEY_FILE)"
    )
