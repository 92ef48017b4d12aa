"""ListEntries page tokens: a cursor signed with a key derived from the server key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from authz_service.core.errors import invalid
from authz_service.core.model import from_micros, to_micros
from authz_service.core.ports import Cursor


class PageTokens:
    """Issues and reads page tokens; one not issued with this key is INVALID_ARGUMENT."""

    def __init__(self, key: bytes) -> None:
        self._key = hmac.new(key, b"authz page token", hashlib.sha256).digest()

    def issue(self, cursor: Cursor) -> str:
        """The page token that resumes after `cursor`."""
        payload = json.dumps([to_micros(cursor[0]), cursor[1]]).encode()
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()[:16]
        return _b64(payload) + "." + _b64(mac)

    def read(self, page_token: str) -> Cursor:
        """The cursor a page token carries."""
        try:
            micros, entry_id = _as_cursor(self._signed_payload(page_token))
        except ValueError:
            raise invalid(
                "page_token", "was not issued by this server; start without one"
            ) from None
        return from_micros(micros), entry_id

    def issue_sequence(self, sequence: int) -> str:
        """The page token of ListAuditEvents that resumes after audit event `sequence`."""
        payload = json.dumps(["audit", sequence]).encode()
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()[:16]
        return _b64(payload) + "." + _b64(mac)

    def read_sequence(self, page_token: str) -> int:
        """The audit sequence an `issue_sequence` token carries."""
        try:
            value = self._signed_payload(page_token)
        except ValueError:
            value = None
        if not (
            isinstance(value, list)
            and len(value) == 2
            and value[0] == "audit"
            and isinstance(value[1], int)
        ):
            raise invalid("page_token", "was not issued by this server; start without one")
        return value[1]

    def _signed_payload(self, page_token: str) -> Any:
        payload_part, mac_part = page_token.split(".")
        payload, mac = _unb64(payload_part), _unb64(mac_part)
        expected = hmac.new(self._key, payload, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, expected):
            raise ValueError("bad signature")
        return json.loads(payload)


def _as_cursor(value: Any) -> tuple[int, str]:
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int)
        and isinstance(value[1], str)
    ):
        return value[0], value[1]
    raise ValueError


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise ValueError from None
