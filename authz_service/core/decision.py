"""The Check decision table (DESIGN section 3): who may do what, and why not.

Everything here runs on the Check hot path, so policies are compiled once per entry and the
deny answers are built once, at import.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .errors import invalid
from .model import ADMIN_PLUGIN, Action, Entry
from .rules import TOKEN_MAX_BYTES

# google.rpc.Code values carried in a decision.
OK = 0
PERMISSION_DENIED = 7
UNAUTHENTICATED = 16


class Reason(enum.StrEnum):
    """Why Check said DENY: one short machine-readable word."""

    MISSING_TOKEN = "missing_token"  # noqa: S105 (a reason, not a secret)
    MALFORMED = "malformed"
    UNKNOWN_TOKEN = "unknown_token"  # noqa: S105 (a reason, not a secret)
    REVOKED = "revoked"
    EXPIRED = "expired"
    PLUGIN_NOT_ALLOWED = "plugin_not_allowed"
    PERMISSION_NOT_ALLOWED = "permission_not_allowed"
    ACTION_NOT_ALLOWED = "action_not_allowed"


@dataclass(frozen=True, slots=True)
class Decision:
    """Check's answer: ALLOW or DENY, the 401/403 distinction, and on ALLOW who it was."""

    allowed: bool
    code: int
    http_status: int
    reason: str = ""
    subject: str = ""
    entry_id: str = ""


def _unauthenticated(reason: Reason) -> Decision:
    return Decision(False, UNAUTHENTICATED, 401, reason.value)


def _forbidden(reason: Reason) -> Decision:
    return Decision(False, PERMISSION_DENIED, 403, reason.value)


DENY_MISSING_TOKEN = _unauthenticated(Reason.MISSING_TOKEN)
DENY_MALFORMED = _unauthenticated(Reason.MALFORMED)
DENY_UNKNOWN_TOKEN = _unauthenticated(Reason.UNKNOWN_TOKEN)
DENY_REVOKED = _unauthenticated(Reason.REVOKED)
DENY_EXPIRED = _unauthenticated(Reason.EXPIRED)
DENY_PLUGIN = _forbidden(Reason.PLUGIN_NOT_ALLOWED)
DENY_PERMISSION = _forbidden(Reason.PERMISSION_NOT_ALLOWED)
DENY_ACTION = _forbidden(Reason.ACTION_NOT_ALLOWED)


@dataclass(frozen=True, slots=True)
class Policy:
    """An entry's decision-relevant facts, compiled for the Check cache.

    `scopes` maps a plugin to (permissions, actions); an empty set means any. From
    `expire_at` on, the token is denied with `expired`: the entry's expiry (`expired`), or the
    end of a previous token's grace period (`unknown_token`: the token is no longer the
    entry's), whichever comes first.
    """

    entry_id: str
    subject: str
    unrestricted: bool
    revoked: bool
    expire_at: float | None
    scopes: Mapping[str, tuple[frozenset[str], frozenset[Action]]]
    allow: Decision
    expired: Decision = DENY_EXPIRED
    # Compiled for the entry's previous token (in its grace period), not its current one.
    previous: bool = False

    @classmethod
    def of(cls, entry: Entry, *, previous: bool = False) -> Policy:
        """Compile `entry` into the form `decide` reads, for its current token or, with
        `previous`, for the token its last rotation replaced."""
        scopes = {
            r.plugin: (frozenset(r.permissions), frozenset(r.actions)) for r in entry.restrictions
        }
        expire_at = None if entry.expire_time is None else entry.expire_time.timestamp()
        expired = DENY_EXPIRED
        if previous:
            grace_ends = (entry.previous_expire_time or entry.update_time).timestamp()
            if expire_at is None or grace_ends < expire_at:
                expire_at, expired = grace_ends, DENY_UNKNOWN_TOKEN
        return cls(
            entry_id=entry.id,
            subject=entry.subject,
            unrestricted=entry.unrestricted,
            revoked=entry.revoke_time is not None,
            expire_at=expire_at,
            scopes=MappingProxyType(scopes),
            allow=Decision(True, OK, 200, "", entry.subject, entry.id),
            expired=expired,
            previous=previous,
        )


def decide(  # noqa: PLR0911 (one return per row of the decision table)
    policy: Policy, plugin: str, permission: str, action: Action | None, now: float
) -> Decision:
    """Apply the decision table to a token already matched to `policy`'s entry.

    `permission` is "" when the request names none; `now` is seconds since the epoch.
    Permission and action restrictions combine with AND.
    """
    if policy.revoked:
        return DENY_REVOKED
    if policy.expire_at is not None and now >= policy.expire_at:
        return policy.expired
    if policy.unrestricted and plugin != ADMIN_PLUGIN:
        return policy.allow
    scope = policy.scopes.get(plugin)
    if scope is None:
        return DENY_PLUGIN
    permissions, actions = scope
    if permissions and permission and permission not in permissions:
        return DENY_PERMISSION
    if actions and (action is None or action not in actions):
        return DENY_ACTION
    return policy.allow


def bearer_token(token: str, authorization: str) -> str | Decision:
    """The presented token, from the raw `token` or an `Authorization` header value.

    Returns a DENY decision for a missing or malformed credential, and raises InvalidArgument
    when a request sets both fields. The scheme is case-insensitive (RFC 7235). A credential of
    more than TOKEN_MAX_BYTES characters is malformed here, before anything hashes it: a 4 MB
    one would hold the event loop for milliseconds.
    """
    if authorization:
        if token:
            raise invalid("authorization", "set either token or authorization, not both")
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return DENY_MALFORMED
        rest = rest.lstrip(" ")
        return rest if rest and len(rest) <= TOKEN_MAX_BYTES else DENY_MALFORMED
    if not token:
        return DENY_MISSING_TOKEN
    return token if len(token) <= TOKEN_MAX_BYTES else DENY_MALFORMED
