"""The rules request fields must follow. Each `*_problem` function returns why a value is bad,
or None; messages never repeat the value, since it may be a token.

Syntax, as documented in docs/api.md:
- token: 8 or more characters, at most 512 bytes of UTF-8, printable, no whitespace;
- subject: 1-128 printable ASCII characters, no whitespace;
- plugin: 1-64 chars, lowercase letters and digits in words joined by `-` or `_`,
  starting with a letter (`catalog`, `tech-insights`);
- permission: 1-128 chars, dot-separated words, each starting with a letter, of letters and
  digits joined by `-` or `_` (`catalog.entity.read`); under the reserved plugin `authz`
  only the four admin permissions;
- description: at most 1024 printable characters; revoke reason: at most 512.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from .errors import MAX_REPORTED_VIOLATIONS, FieldViolation, InvalidArgument
from .model import ADMIN_PLUGIN, Action, AdminPermission, Restriction

TOKEN_MIN_CHARS = 8
TOKEN_MAX_BYTES = 512
SUBJECT_MAX_CHARS = 128
DESCRIPTION_MAX_CHARS = 1024
REVOKE_REASON_MAX_CHARS = 512
PLUGIN_MAX_CHARS = 64
PERMISSION_MAX_CHARS = 128
MAX_RESTRICTIONS = 64
MAX_PERMISSIONS = 64
MAX_ACTIONS = len(Action)
MAX_MASK_PATHS = 16
# The longest a rotated-away token may keep working (DESIGN section 9).
MAX_GRACE = timedelta(days=7)

_SUBJECT = re.compile(r"[!-~]+")
# The common token (printable ASCII, no space, within the limits) in one regex match: the
# character-by-character checks below only run for anything else.
_PLAIN_TOKEN = re.compile(rf"[!-~]{{{TOKEN_MIN_CHARS},{TOKEN_MAX_BYTES}}}")
_WORD = r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*"
_PLUGIN = re.compile(_WORD)
_PERMISSION_WORD = r"[A-Za-z][A-Za-z0-9]*(?:[-_][A-Za-z0-9]+)*"
_PERMISSION = re.compile(rf"{_PERMISSION_WORD}(?:\.{_PERMISSION_WORD})*")
_ADMIN_PERMISSIONS = frozenset(AdminPermission)


def token_problem(token: str) -> str | None:  # noqa: PLR0911 (one return per rule)
    """Why `token` cannot be a token, or None."""
    if _PLAIN_TOKEN.fullmatch(token):
        return None
    if not token:
        return "is required"
    if len(token) < TOKEN_MIN_CHARS:
        return f"must be at least {TOKEN_MIN_CHARS} characters"
    if len(token.encode("utf-8", "surrogatepass")) > TOKEN_MAX_BYTES:
        return f"must be at most {TOKEN_MAX_BYTES} bytes"
    if any(c.isspace() for c in token):
        return "must not contain whitespace"
    if not token.isprintable():
        return "must contain only printable characters"
    return None


def subject_problem(subject: str) -> str | None:
    """Why `subject` cannot name an entry, or None."""
    if not subject:
        return "is required"
    if len(subject) > SUBJECT_MAX_CHARS:
        return f"must be at most {SUBJECT_MAX_CHARS} characters"
    if not _SUBJECT.fullmatch(subject):
        return "must be printable ASCII without whitespace"
    return None


def plugin_problem(plugin: str) -> str | None:
    """Why `plugin` is not a plugin id, or None."""
    if not plugin:
        return "is required"
    if len(plugin) > PLUGIN_MAX_CHARS:
        return f"must be at most {PLUGIN_MAX_CHARS} characters"
    if not _PLUGIN.fullmatch(plugin):
        return "must be lowercase letters and digits, words joined by '-' or '_' (e.g. catalog)"
    return None


def permission_problem(permission: str) -> str | None:
    """Why `permission` is not a permission name, or None."""
    if not permission:
        return "must not be empty"
    if len(permission) > PERMISSION_MAX_CHARS:
        return f"must be at most {PERMISSION_MAX_CHARS} characters"
    if not _PERMISSION.fullmatch(permission):
        return "must be dot-separated words of letters and digits (e.g. catalog.entity.read)"
    return None


def text_problem(text: str, max_chars: int) -> str | None:
    """Why a free-text field (description, revoke reason) is bad, or None."""
    if len(text) > max_chars:
        return f"must be at most {max_chars} characters"
    if not text.isprintable():
        return "must contain only printable characters (no newlines or control characters)"
    return None


def action_problem(value: int) -> str | None:
    """Why an `Action` enum number is not one of the four actions, or None."""
    if value in Action._value2member_map_:
        return None
    return "must be one of CREATE, READ, UPDATE, DELETE"


@dataclass(frozen=True, slots=True)
class RestrictionInput:
    """A restriction as a request spells it, not yet validated."""

    plugin: str
    permissions: Sequence[str] = ()
    actions: Sequence[int] = ()


class Violations:
    """Collects the bad fields of one request, so a caller learns them at once: the first
    MAX_REPORTED_VIOLATIONS in full, the others as a count."""

    def __init__(self, found: Iterable[FieldViolation] = ()) -> None:
        self._found: list[FieldViolation] = []
        self._omitted = 0
        for violation in found:
            self.check(violation.field, violation.description)

    def check(self, field: str, problem: str | None) -> None:
        """Record `problem` for `field` if there is one."""
        if problem is None:
            return
        if len(self._found) < MAX_REPORTED_VIOLATIONS:
            self._found.append(FieldViolation(field, problem))
        else:
            self._omitted += 1

    @property
    def found(self) -> tuple[FieldViolation, ...]:
        """The violations recorded in full so far."""
        return tuple(self._found)

    @property
    def omitted(self) -> int:
        """How many more violations were found than are recorded in full."""
        return self._omitted

    def raise_if_any(self) -> None:
        """Raise InvalidArgument naming the recorded fields."""
        if self._found:
            raise InvalidArgument(self._found, self._omitted)


def parse_restriction(raw: RestrictionInput, field: str, found: Violations) -> Restriction:
    """Validate one restriction, recording problems under `field`.

    Past a list's limit only the count is reported: the work a request can cause is bounded.
    """
    found.check(f"{field}.plugin", plugin_problem(raw.plugin))
    permissions = raw.permissions[:MAX_PERMISSIONS]
    if len(raw.permissions) > MAX_PERMISSIONS:
        found.check(f"{field}.permissions", f"must list at most {MAX_PERMISSIONS} permissions")
    for i, permission in enumerate(permissions):
        where = f"{field}.permissions[{i}]"
        problem = permission_problem(permission)
        if problem is None and raw.plugin == ADMIN_PLUGIN and permission not in _ADMIN_PERMISSIONS:
            problem = "under plugin 'authz' must be one of " + ", ".join(AdminPermission)
        found.check(where, problem)
    found.check(f"{field}.permissions", _duplicates_problem(permissions))
    raw_actions = raw.actions[:MAX_ACTIONS]
    if len(raw.actions) > MAX_ACTIONS:
        found.check(f"{field}.actions", f"must list at most {MAX_ACTIONS} actions")
    for i, action in enumerate(raw_actions):
        found.check(f"{field}.actions[{i}]", action_problem(action))
    found.check(f"{field}.actions", _duplicates_problem(raw_actions))
    actions = tuple(Action(a) for a in raw_actions if action_problem(a) is None)
    return Restriction(raw.plugin, tuple(permissions), actions)


def parse_scope(
    raws: Sequence[RestrictionInput],
    unrestricted: bool,
    found: Violations,
    field: str = "access_restrictions",
) -> tuple[Restriction, ...]:
    """Validate an entry's restrictions (the request's `field`) with its `unrestricted` flag.

    Least privilege by default: an entry needs at least one restriction unless it says
    `unrestricted` explicitly, and beside `unrestricted` only the `authz` plugin may be listed
    (any other restriction would be silently meaningless).
    """
    if len(raws) > MAX_RESTRICTIONS:
        found.check(field, f"must list at most {MAX_RESTRICTIONS} restrictions")
    restrictions = tuple(
        parse_restriction(raw, f"{field}[{i}]", found)
        for i, raw in enumerate(raws[:MAX_RESTRICTIONS])
    )
    plugins = [r.plugin for r in restrictions]
    found.check(field, _duplicates_problem(plugins, "plugin"))
    if not restrictions and not unrestricted:
        found.check(field, "must list at least one restriction unless unrestricted is set")
    if unrestricted and any(p != ADMIN_PLUGIN for p in plugins):
        found.check(field, "beside unrestricted, only the reserved plugin 'authz' may be listed")
    return restrictions


def _duplicates_problem(values: Iterable[object], what: str = "value") -> str | None:
    seen: set[object] = set()
    for value in values:
        if value in seen:
            return f"must not repeat a {what}"
        seen.add(value)
    return None
