"""Entries and access restrictions: the service's domain objects."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

# The plugin that guards the admin API itself. `unrestricted` never covers it.
ADMIN_PLUGIN = "authz"
BOOTSTRAP_SUBJECT = "bootstrap-admin"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def new_etag() -> str:
    """A fresh opaque etag: 96 random bits, in hex (never starting with "-", which a command
    line would take for a flag: `authz-admin update --etag ETAG`)."""
    return secrets.token_hex(12)


def to_micros(when: datetime) -> int:
    """Microseconds since the epoch, exactly (no float rounding)."""
    return (when - _EPOCH) // timedelta(microseconds=1)


def from_micros(micros: int) -> datetime:
    """The UTC datetime `micros` microseconds after the epoch."""
    return _EPOCH + timedelta(microseconds=micros)


class Action(enum.IntEnum):
    """What a request does; values match the `authz.v1.Action` enum."""

    CREATE = 1
    READ = 2
    UPDATE = 3
    DELETE = 4


class State(enum.IntEnum):
    """An entry's lifecycle state; values match `authz.v1.State`."""

    ACTIVE = 1
    REVOKED = 2
    EXPIRED = 3


class AdminPermission(enum.StrEnum):
    """The permissions under the `authz` plugin that the admin RPCs ask for."""

    READ = "authz.entry.read"
    CREATE = "authz.entry.create"
    UPDATE = "authz.entry.update"
    REVOKE = "authz.entry.revoke"
    AUDIT_READ = "authz.audit.read"


@dataclass(frozen=True, slots=True)
class Restriction:
    """What a token may reach in one plugin; empty permissions or actions mean any."""

    plugin: str
    permissions: tuple[str, ...] = ()
    actions: tuple[Action, ...] = ()


FULL_ADMIN_RESTRICTION = Restriction(ADMIN_PLUGIN, tuple(AdminPermission))


@dataclass(frozen=True, slots=True)
class Entry:
    """One static external access token's entry. It holds the token's verifier, never the token.

    `revision` counts writes to the entry (the store's compare-and-set); `etag`, the version
    clients echo back to UpdateEntry, is random and new at each write, so it cannot be guessed.
    """

    id: str
    subject: str
    description: str
    restrictions: tuple[Restriction, ...]
    unrestricted: bool
    verifier: str
    lookup_tag: int
    create_time: datetime
    update_time: datetime
    revision: int = 1
    expire_time: datetime | None = None
    revoke_time: datetime | None = None
    revoke_reason: str = ""
    last_used_time: datetime | None = None
    etag: str = field(default_factory=new_etag)
    # The token the last rotation replaced, while its grace period lasts (DESIGN section 9):
    # its verifier and tag, and when it stops working. Empty, None, None when there is none.
    previous_verifier: str = ""
    previous_lookup_tag: int | None = None
    previous_expire_time: datetime | None = None

    def previous_live(self, now: datetime) -> bool:
        """Whether the previous token still works at `now` (the entry's own state aside)."""
        return self.previous_expire_time is not None and now < self.previous_expire_time

    def state(self, now: datetime) -> State:
        """REVOKED wins over EXPIRED; an entry expires at `expire_time`, inclusive."""
        if self.revoke_time is not None:
            return State.REVOKED
        if self.expire_time is not None and self.expire_time <= now:
            return State.EXPIRED
        return State.ACTIVE
