"""Reading a Backstage app-config for `authz-admin import-backstage`: its
`backend.auth.externalAccess`, mapped to the entries an import would create, as far as the file
alone decides; nothing here talks to a server (`_backstage` settles the plan with one).

Reading follows Backstage's own config reader: `${VAR}` substitutions (`$${` is a literal
`${`), `$env` and `$file` includes, and a restriction's `permission` and
`permissionAttribute.action` as a string or a list, split at spaces and commas. Where Backstage
would quietly drop a value whose variable is unset, the entry is refused, naming the variable:
a dropped `permission` would mean any permission. docs/admin-cli.md says what maps to what.

No token is put in a message: `Imported.token` is even left out of its repr.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz_client import ACTIONS, Restriction

from ._failures import UsageError
from ._output import NONE

CREATE, CREATED, PRESENT = "create", "created", "present"
CONFLICT, SKIPPED, NOT_IMPORTABLE = "conflict", "skipped", "not importable"
STATUSES = (CREATE, CREATED, PRESENT, CONFLICT, SKIPPED, NOT_IMPORTABLE)
IMPORTED = frozenset({CREATE, CREATED, PRESENT})

ADMIN_PLUGIN = "authz"  # this service's own admin plugin: an import never grants it

# The rules of docs/api.md ("Rules for names and tokens"), so that a dry run finds what the
# server would refuse; the server checks them again.
_SUBJECT = re.compile(r"[!-~]{1,128}")
_PLUGIN = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
_WORD = r"[A-Za-z][A-Za-z0-9]*(?:[-_][A-Za-z0-9]+)*"
_PERMISSION = re.compile(rf"{_WORD}(?:\.{_WORD})*")
_MAX_PLUGIN, _MAX_PERMISSION, _MAX_TOKEN_BYTES, _MIN_TOKEN = 64, 128, 512, 8
_MAX_RESTRICTIONS = _MAX_PERMISSIONS = 64

_SUBSTITUTION = re.compile(r"(\$?\$\{[^{}]*\})")  # `${NAME}`, or `$${...}` for a literal
_INCLUDES = ("$env", "$file", "$include")
_RESTRICTION_KEYS = ("plugin", "permission", "permissionAttribute")
_NOT_STATIC = {
    "legacy": "legacy tokens are JWTs signed with a shared secret",
    "jwks": "jwks tokens are JWTs checked against a key set",
}


class NotImported(Exception):
    """Why one entry of the file is not imported: `status` is skipped or conflict."""

    def __init__(self, path: str, problem: str, status: str = SKIPPED) -> None:
        super().__init__(f"{path}: {problem}")
        self.status = status


class WideningError(Exception):
    """Restrictions of one plugin that no single restriction holds without allowing more."""


@dataclass(frozen=True, slots=True)
class Imported:
    """One externalAccess entry (or legacy key) and what becomes of it."""

    source: str  # where in the file: externalAccess[2]
    subject: str
    status: str  # one of STATUSES
    reason: str = ""
    restrictions: tuple[Restriction, ...] = ()
    unrestricted: bool = False
    token: str = field(default="", repr=False)
    entry_id: str = ""

    def to_dict(self, *, dry_run: bool) -> dict[str, Any]:
        """JSON-ready data with stable keys; never the token."""
        return {
            "source": self.source,
            "subject": self.subject,
            "plan": CREATE if self.status == CREATED else self.status,
            "result": None if dry_run else self.status,
            "reason": self.reason,
            "unrestricted": self.unrestricted,
            "access_restrictions": [
                {"plugin": r.plugin, "permissions": list(r.permissions), "actions": list(r.actions)}
                for r in self.restrictions
            ],
            "entry_id": self.entry_id or None,
        }

    def access(self) -> str:
        """The access in the `--allow` form, as `authz-admin list` shows it."""
        shown = ["UNRESTRICTED"] if self.unrestricted else []
        return " ".join(shown + [str(r) for r in self.restrictions]) or NONE


@dataclass(frozen=True, slots=True)
class Plan:
    """What an app-config file holds for import, read and mapped before any call."""

    app_config: str
    items: tuple[Imported, ...]


# --- reading -------------------------------------------------------------------------------


def read_plan(path: str, environ: Mapping[str, str], *, allow_unrestricted: bool) -> Plan:
    """Read and map the app-config at `path` (`$file` is relative to its folder); UsageError
    when the file cannot be read or holds no externalAccess."""
    try:
        import yaml  # type: ignore[import-untyped]  # noqa: PLC0415 (only this command needs it)
    except ImportError:
        raise UsageError("import-backstage reads YAML with PyYAML: pip install pyyaml") from None

    config_file = Path(path)
    try:
        text = config_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
        raise UsageError(f"cannot read APP_CONFIG {path}: {reason}") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsageError(f"APP_CONFIG {path} is not valid YAML: {_yaml_problem(error)}") from None

    def read_file(name: str) -> str:
        return (config_file.parent / name).read_text(encoding="utf-8")

    items = plan_entries(config, environ, read_file, allow_unrestricted=allow_unrestricted)
    return Plan(path, tuple(items))


def _yaml_problem(error: Any) -> str:
    """What PyYAML found and where, without its own message: that quotes the line, which
    may hold a token."""
    said = [getattr(error, "problem", None) or "not YAML", getattr(error, "context", None)]
    marks = [getattr(error, "problem_mark", None), getattr(error, "context_mark", None)]
    where = [
        f"{what} at line {mark.line + 1}, column {mark.column + 1}"
        for what, mark in zip(said, marks, strict=True)
        if what and mark
    ]
    return "; ".join(where) or str(said[0])


def plan_entries(
    config: Any,
    environ: Mapping[str, str],
    read_file: Callable[[str], str],
    *,
    allow_unrestricted: bool,
) -> list[Imported]:
    """Map a parsed app-config: each externalAccess entry (and each legacy backend.auth.keys
    item) to what an import does with it, as far as the file alone decides."""
    nothing = UsageError("APP_CONFIG has no backend.auth.externalAccess: nothing to import")
    auth = config
    for key in ("backend", "auth"):
        if not isinstance(auth, dict):
            raise nothing
        auth = auth.get(key)
    if not isinstance(auth, dict) or auth.get("externalAccess") is auth.get("keys") is None:
        raise nothing
    listed, keys = auth.get("externalAccess") or [], auth.get("keys") or []
    if not isinstance(listed, list) or not isinstance(keys, list):
        raise UsageError("backend.auth.externalAccess and backend.auth.keys must be lists")
    reader = _Reader(environ, read_file)
    items = [
        _entry(f"externalAccess[{i}]", item, reader, allow_unrestricted)
        for i, item in enumerate(listed)
    ]
    legacy = f"{_NOT_STATIC['legacy']} (backend.auth.keys); only static tokens import"
    items += [Imported(f"keys[{i}]", NONE, NOT_IMPORTABLE, legacy) for i in range(len(keys))]
    return _without_duplicates(items)


class _Reader:
    """Backstage's config transforms, over one entry's values."""

    def __init__(self, environ: Mapping[str, str], read_file: Callable[[str], str]) -> None:
        self.environ = environ
        self.read_file = read_file

    def value(self, node: Any, path: str) -> Any:
        """`node` with every substitution and include applied."""
        if isinstance(node, str):
            return self.substituted(node, path)
        if isinstance(node, list):
            return [self.value(item, f"{path}[{i}]") for i, item in enumerate(node)]
        if isinstance(node, dict):
            if any(key in _INCLUDES for key in node):
                return self.included(node, path)
            return {str(key): self.value(item, f"{path}.{key}") for key, item in node.items()}
        return node

    def string(self, node: Any, path: str) -> str:
        """`node` applied, which must be a non-empty string."""
        return _string(self.value(node, path), path)

    def substituted(self, text: str, path: str) -> str:
        """`text` with `${NAME}` replaced from the environment, and `$${` read as `${`."""
        parts = _SUBSTITUTION.split(text)
        for i in range(1, len(parts), 2):
            if parts[i].startswith("$$"):
                parts[i] = parts[i][1:]
                continue
            name = parts[i][2:-1].strip()
            if name not in self.environ:
                unset = f"the environment variable {name} is not set" if name else "${} is empty"
                raise NotImported(path, f"{unset} (a literal ${{ is written $${{)")
            parts[i] = self.environ[name]
        return "".join(parts)

    def included(self, node: Mapping[str, Any], path: str) -> str:
        """The value of a `$env: NAME` or `$file: PATH` mapping."""
        key = next(key for key in node if key in _INCLUDES)
        given = node[key]
        if len(node) != 1 or not isinstance(given, str):
            raise NotImported(path, f"{key} must stand alone in its mapping, with a string")
        name = self.substituted(given, f"{path}.{key}")
        if key == "$env":
            if name not in self.environ:
                raise NotImported(f"{path}.$env", f"the environment variable {name} is not set")
            return self.environ[name]
        if key == "$file":
            try:
                return self.read_file(name).rstrip()
            except (OSError, UnicodeDecodeError) as error:
                reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
                raise NotImported(f"{path}.$file", f"cannot read {name}: {reason}") from None
        raise NotImported(path, f"{key} is not followed here: put the values in this file")


def _entry(source: str, item: Any, reader: _Reader, allow_unrestricted: bool) -> Imported:
    if not isinstance(item, dict):
        return Imported(source, NONE, SKIPPED, "must be a mapping with type and options")
    options = item.get("options")
    subject = NONE
    try:
        kind = reader.string(item.get("type"), "type")
        if kind != "static":
            why = _NOT_STATIC.get(kind, f"type {kind!r} is not one this service knows")
            shown = _shown_subject(options, reader)
            return Imported(source, shown, NOT_IMPORTABLE, f"{why}; only static tokens import")
        options = _options(options)
        subject = reader.string(options.get("subject"), "options.subject")
        token = reader.string(options.get("token"), "options.token")
        _follows_the_rules(token, subject)
        given = reader.value(item.get("accessRestrictions"), "accessRestrictions")
        restrictions, notes = _merged(_backstage_restrictions(given), allow_unrestricted)
    except NotImported as refused:
        return Imported(source, subject, refused.status, str(refused))
    return Imported(
        source, subject, CREATE, notes, restrictions, unrestricted=not restrictions, token=token
    )


def _shown_subject(options: Any, reader: _Reader) -> str:
    """A not-importable entry's subject (or subjectPrefix), for the plan; `-` if unreadable."""
    if not isinstance(options, dict):
        return NONE
    shown = options.get("subject", options.get("subjectPrefix"))
    try:
        return reader.substituted(shown, "options") if isinstance(shown, str) else NONE
    except NotImported:
        return NONE


def _options(options: Any) -> Mapping[str, Any]:
    if not isinstance(options, dict):
        raise NotImported("options", "must be a mapping with token and subject")
    return options


def _string(value: Any, path: str) -> str:
    if value is None:
        raise NotImported(path, "is missing")
    if not isinstance(value, str):
        raise NotImported(path, f"must be a string, not {type(value).__name__}")
    if not value:
        raise NotImported(path, "is empty")
    return value


def _names(value: Any, path: str, valid: Sequence[str] = ()) -> tuple[str, ...]:
    """Backstage's string-or-list: split at spaces and commas, each once; () means any."""
    if value is None:
        return ()
    given = value if isinstance(value, list) else [value]
    names: list[str] = []
    for i, item in enumerate(given):
        if not isinstance(item, str) or not item:
            where = f"{path}[{i}]" if isinstance(value, list) else path
            raise NotImported(where, "must be a non-empty string")
        names += [name for name in re.split(r"[ ,]", item) if name and name not in names]
    if unknown := [name for name in names if valid and name not in valid]:
        raise NotImported(path, f"{unknown[0]!r} is not one of {', '.join(valid)}")
    return tuple(names)


def _backstage_restrictions(value: Any) -> list[Restriction]:
    """The accessRestrictions as Backstage reads them, in order, before merging."""
    path = "accessRestrictions"
    if value is None:
        return []
    if not isinstance(value, list):
        raise NotImported(path, "must be a list")
    found: list[Restriction] = []
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(item, dict):
            raise NotImported(where, "must be a mapping with plugin")
        if unknown := [key for key in item if key not in _RESTRICTION_KEYS]:
            raise NotImported(f"{where}.{unknown[0]}", f"is not {', '.join(_RESTRICTION_KEYS)}")
        attributes = item.get("permissionAttribute") or {}
        if not isinstance(attributes, dict) or any(key != "action" for key in attributes):
            raise NotImported(f"{where}.permissionAttribute", "must be a mapping with action")
        found.append(
            Restriction(
                _string(item.get("plugin"), f"{where}.plugin"),
                _names(item.get("permission"), f"{where}.permission"),
                _names(attributes.get("action"), f"{where}.permissionAttribute.action", ACTIONS),
            )
        )
    return found


# --- mapping -------------------------------------------------------------------------------


def _follows_the_rules(token: str, subject: str, path: str = "options") -> None:
    """NotImported unless the token and subject pass this service's rules too."""
    if len(token) < _MIN_TOKEN:
        raise NotImported(f"{path}.token", f"must be at least {_MIN_TOKEN} characters")
    if len(token.encode("utf-8", "surrogatepass")) > _MAX_TOKEN_BYTES:
        raise NotImported(f"{path}.token", f"must be at most {_MAX_TOKEN_BYTES} bytes")
    if any(c.isspace() for c in token) or not token.isprintable():
        raise NotImported(f"{path}.token", "must be printable, without whitespace")
    if not _SUBJECT.fullmatch(subject):
        raise NotImported(
            f"{path}.subject", f"{subject!r} must be 1-128 printable ASCII, no whitespace"
        )


def _merged(
    given: Sequence[Restriction], allow_unrestricted: bool, path: str = "accessRestrictions"
) -> tuple[tuple[Restriction, ...], str]:
    """One restriction per plugin, and a note of what was merged; NotImported when the entry
    has none (without --allow-unrestricted), names `authz`, or cannot merge exactly."""
    if not given and not allow_unrestricted:
        raise NotImported(
            path,
            "none, so in Backstage this token reaches every plugin: add accessRestrictions, "
            "or give --allow-unrestricted to import it as unrestricted",
        )
    merged: list[Restriction] = []
    notes: list[str] = []
    for plugin, group in _by_plugin(given).items():
        if plugin == ADMIN_PLUGIN:
            raise NotImported(
                path,
                "plugin 'authz' is this service's own admin plugin, which an imported token "
                "must not reach; leave it out (admins are made with `authz-admin create`)",
                CONFLICT,
            )
        try:
            merged.append(merge(group))
        except WideningError as widening:
            raise NotImported(path, str(widening), CONFLICT) from None
        if len(group) > 1:
            notes.append(f"the {len(group)} restrictions of {plugin} merged exactly")
    if len(merged) > _MAX_RESTRICTIONS:
        raise NotImported(path, f"more than {_MAX_RESTRICTIONS} plugins")
    for r in merged:
        if len(r.plugin) > _MAX_PLUGIN or not _PLUGIN.fullmatch(r.plugin):
            raise NotImported(path, f"plugin {r.plugin!r}: must be lowercase words joined by -")
        if len(r.permissions) > _MAX_PERMISSIONS:
            raise NotImported(path, f"plugin {r.plugin!r}: more than {_MAX_PERMISSIONS} names")
        for name in r.permissions:
            if len(name) > _MAX_PERMISSION or not _PERMISSION.fullmatch(name):
                raise NotImported(path, f"permission {name!r}: must be dot-separated words")
    return tuple(merged), "; ".join(notes)


def _by_plugin(restrictions: Iterable[Restriction]) -> dict[str, list[Restriction]]:
    groups: dict[str, list[Restriction]] = {}
    for r in restrictions:
        groups.setdefault(r.plugin, []).append(r)
    return groups


class _Other:
    """A permission none of the restrictions names (a restriction of any permission has it)."""


_OTHER = _Other()
_NO_ACTION = ""  # a request that names no action: only an 'any action' restriction allows it


def merge(group: Sequence[Restriction]) -> Restriction:
    """One restriction allowing exactly what any of `group` (one plugin's) allows.

    Backstage lets a request through when one of a token's restrictions allows it; an entry
    here has one restriction per plugin, whose permissions and actions combine with AND. The
    union is one restriction when the smallest one holding them all (every permission and
    action any lists; any, if one says any) allows nothing beyond them, as tried with every
    permission named (and one named by none) and every action (and none). WideningError
    names a request it would allow that none of them does.
    """
    named = list(dict.fromkeys(p for r in group for p in r.permissions))
    every_permission: set[object] = {*named, _OTHER}
    every_action = {*ACTIONS, _NO_ACTION}
    sets: list[tuple[set[object], set[str]]] = [
        (set(r.permissions) or every_permission, set(r.actions) or every_action) for r in group
    ]
    permissions: set[object] = set().union(*(p for p, _ in sets))
    actions: set[str] = set().union(*(a for _, a in sets))
    for permission in [*named, _OTHER]:
        for action in [*ACTIONS, _NO_ACTION]:
            if permission not in permissions or action not in actions:
                continue
            if not any(permission in p and action in a for p, a in sets):
                what = f"permission {permission!r}" if permission in named else "a permission"
                how = f"action {action!r}" if action else "no action"
                raise WideningError(
                    f"the {len(group)} restrictions of plugin {group[0].plugin!r} cannot be one "
                    f"without also allowing {what} with {how}, which none of them allows (an "
                    "entry has one restriction per plugin; Backstage refuses two for one plugin)"
                )
    return Restriction(
        group[0].plugin,
        () if _OTHER in permissions else tuple(p for p in named if p in permissions),
        () if _NO_ACTION in actions else tuple(a for a in ACTIONS if a in actions),
    )


def _without_duplicates(items: list[Imported]) -> list[Imported]:
    """Among the entries to create, a token given twice is ambiguous (Backstage refuses it), so
    every copy is a conflict; of a subject given twice (Backstage allows it), the first keeps
    it and the others conflict."""
    sources: dict[str, list[str]] = {}
    for item in items:
        if item.token:
            sources.setdefault(item.token, []).append(item.source)
    subjects: dict[str, str] = {}
    result = []
    for item in items:
        twice = [s for s in sources.get(item.token, []) if s != item.source] if item.token else []
        if twice:
            why = f"the same token as {', '.join(twice)}: give each its own"
            result.append(dataclasses.replace(item, status=CONFLICT, reason=why))
        elif item.status == CREATE and item.subject in subjects:
            why = f"the subject of {subjects[item.subject]} too: here a subject names one entry"
            result.append(dataclasses.replace(item, status=CONFLICT, reason=why))
        else:
            if item.status == CREATE:
                subjects[item.subject] = item.source
            result.append(item)
    return result
