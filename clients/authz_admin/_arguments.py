"""The command line's grammar: commands, flags, and the compact restriction form.

Pure: parsing reads no files, environment or network, so it is tested without I/O.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from authz_client import ACTIONS, KEEP, Restriction

from ._failures import UsageError

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 5.0
RESTRICTION_FORM = "PLUGIN[:PERM1,PERM2[:ACTION1,ACTION2]]"

_DESCRIPTION = """\
Manage the authorization service's entries (one static external access token each) and test
tokens with Check. Tokens are read from stdin or --token-file, never from a flag value.

exit codes: 0 success, 1 check answered DENY, 2 usage error or invalid request,
3 no such entry, 4 admin token missing or refused, 5 no server answered,
6 conflict (subject or token taken, stale etag, revoked entry), 7 stdout not writable,
8 audit --verify found the audit log's chain broken,
9 import-backstage left entries out (conflict, skipped, not importable)"""

_RESTRICTION_HELP = (
    "let the token reach PLUGIN, optionally only these permissions and actions "
    "(create, read, update, delete); empty means any: catalog, "
    "catalog:catalog.entity.read:read, catalog::read. Repeat for more plugins."
)


def restriction(text: str) -> Restriction:
    """A restriction in the compact form `PLUGIN[:PERM1,PERM2[:ACTION1,ACTION2]]`.

    An empty part means any; an empty item in a list (`catalog:,,`, `catalog::read,`) is
    refused, never read as "any", and so is an item listed twice.
    """
    try:
        parsed = Restriction.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not parsed.plugin:
        raise argparse.ArgumentTypeError(f"{text!r}: the PLUGIN in {RESTRICTION_FORM} is missing")
    for what, part in zip(("permission", "action"), text.split(":")[1:], strict=False):
        if part and not all(part.split(",")):
            raise argparse.ArgumentTypeError(
                f"{text!r}: an empty {what} in {part!r}; list {what}s as A,B "
                "(or leave the part empty for any)"
            )
    for what, items in (("permission", parsed.permissions), ("action", parsed.actions)):
        if repeated := _repeated(items):
            raise argparse.ArgumentTypeError(f"{text!r}: the {what} {repeated!r} is listed twice")
    return parsed


def _repeated(items: Sequence[str]) -> str | None:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None


def expiry(text: str) -> datetime:
    """An ISO 8601 date or time; one without a UTC offset is taken as UTC."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not ISO 8601: use e.g. 2030-01-31 or 2030-01-31T12:00:00Z"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


_SPAN = re.compile(r"(\d{1,9})([smhd])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_SPAN_FORM = "a number and a unit: 90s, 15m, 24h or 7d"


def duration(text: str) -> timedelta:
    """A span of time: a whole number and one unit, `90s`, `15m`, `24h` or `7d`."""
    match = _SPAN.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: use {_SPAN_FORM}")
    return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])


def duration_text(span: timedelta) -> str:
    """A span as `duration` reads one, in the largest unit that divides it: 7d, 36h, 90s."""
    whole = int(span.total_seconds())
    for unit, size in _UNIT_SECONDS.items():
        if whole >= size and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def moment(text: str) -> datetime | timedelta:
    """A point in time: an RFC 3339 / ISO 8601 time (UTC if no offset), or a duration meaning
    that long ago (`24h`), which the command resolves against the clock when it runs."""
    if _SPAN.fullmatch(text):
        return duration(text)
    try:
        return expiry(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a time (2030-01-31T12:00:00Z) nor a duration ago ({_SPAN_FORM})"
        ) from None


def seconds(text: str) -> float:
    """A positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def action(text: str) -> str:
    """One lowercase action name."""
    if text.lower() not in ACTIONS:
        raise argparse.ArgumentTypeError(f"{text!r}: use one of {', '.join(ACTIONS)}")
    return text.lower()


class RefuseTokenFlag(argparse.Action):
    """A hidden `--token`/`--admin-token` that explains why tokens never come from flags.

    The usage error does not repeat the value, so the token is not echoed back either.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        """Stop with a usage error (exit 2) naming the safe ways in."""
        ways = "stdin or --token-file FILE"
        if option_string == "--admin-token":
            ways = "AUTHZ_ADMIN_TOKEN or --admin-token-file FILE"
        parser.error(
            f"{option_string} is refused: a flag value shows in `ps` and shell history; "
            f"give the token through {ways}"
        )


@dataclass(frozen=True, slots=True)
class Access:
    """What an entry may reach: its restrictions, and whether it is unrestricted."""

    restrictions: tuple[Restriction, ...]
    unrestricted: bool


def access_of(args: argparse.Namespace) -> Access | None:
    """The access given by --allow and --unrestricted, or None when neither was given.

    An entry has at most one restriction per plugin: two --allow for one plugin are refused.
    """
    allowed: list[Restriction] = args.allow or []
    if not allowed and not args.unrestricted:
        return None
    if plugin := _repeated([r.plugin for r in allowed]):
        given = " ".join(f"--allow {str(r)!r}" for r in allowed if r.plugin == plugin)
        raise UsageError(
            f"the plugin {plugin!r} is given twice ({given}): an entry has one restriction per "
            "plugin; give one --allow with all its permissions and actions"
        )
    return Access(tuple(allowed), bool(args.unrestricted))


def field_labels(args: argparse.Namespace) -> dict[str, str]:
    """The server's names of request fields, as this command line gave them: the flag or
    argument, with its value (never a token's)."""
    labels = {
        "token": "the new token",
        "new_token": "the new token",
        "description": "--description",
        "unrestricted": "--unrestricted",
        "access_restrictions": "--allow",
        "etag": "--etag",
        "reason": "--reason",
    }
    if args.command == "check":
        labels |= {
            "token": "the token to check",
            "authorization": "the token to check",
            "plugin": f"PLUGIN {args.plugin!r}",
            "permission": f"--permission {args.permission!r}",
            "action": f"--action {args.action}",
        }
    if getattr(args, "subject", None) is not None:
        labels["subject"] = f"SUBJECT {args.subject!r}"
    if getattr(args, "entry", None) is not None:
        labels["id"] = f"ENTRY {args.entry!r}"
    if getattr(args, "expires", None) is not None:
        labels["expire_time"] = f"--expires {args.expires.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
    if getattr(args, "grace", None) is not None:
        labels["previous_token_grace"] = f"--grace {duration_text(args.grace)}"
    if args.command == "audit":
        labels |= {
            "entry_id": "ENTRY",
            "actor_entry_id": "--actor",
            "since": "--since",
            "until": "--until",
        }
    for i, allowed in enumerate(getattr(args, "allow", None) or ()):
        given = f"--allow {str(allowed)!r}"
        path = f"access_restrictions[{i}]"
        labels |= {
            path: given,
            f"{path}.plugin": f"{given}: plugin {allowed.plugin!r}",
            f"{path}.permissions": f"{given}: permissions",
            f"{path}.actions": f"{given}: actions",
        }
        for j, permission in enumerate(allowed.permissions):
            labels[f"{path}.permissions[{j}]"] = f"{given}: permission {permission!r}"
        for j, action in enumerate(allowed.actions):
            labels[f"{path}.actions[{j}]"] = f"{given}: action {action!r}"
    return labels


_UPDATABLE = ("description", "restrictions", "unrestricted", "expire_time")


def update_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments for `AuthzClient.update_entry`: only what the flags change.

    --allow and --unrestricted together replace the entry's whole access: an entry updated
    with only --allow becomes restricted to exactly those plugins.
    """
    fields: dict[str, Any] = {}
    access = access_of(args)
    if access is not None:
        fields["restrictions"] = access.restrictions
        fields["unrestricted"] = access.unrestricted
    if args.description is not None:
        fields["description"] = args.description
    if args.no_expiry:
        fields["expire_time"] = None
    elif args.expires is not None:
        fields["expire_time"] = args.expires
    if not fields:
        raise UsageError(
            "nothing to change: give --allow, --unrestricted, --description, --expires or "
            "--no-expiry (rotate the token with `authz-admin rotate`)"
        )
    return {name: fields.get(name, KEEP) for name in _UPDATABLE}


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """What `audit` asks for: the entry and actor as given (an id or a subject, or None), and
    the time range [since, until)."""

    entry: str | None
    actor: str | None
    since: datetime | None
    until: datetime | None


def audit_query(args: argparse.Namespace, now: datetime) -> AuditQuery:
    """The filters of `audit`, with a duration ago (`--since 24h`) taken back from `now`.

    --verify reads the whole chain, so it takes no filter.
    """
    given = [
        name
        for name, value in (
            ("ENTRY", args.entry),
            ("--actor", args.actor),
            ("--since", args.since),
            ("--until", args.until),
        )
        if value is not None
    ]
    if args.verify and given:
        raise UsageError(
            f"--verify checks the whole audit log, so it takes no {', '.join(given)}: "
            "run `authz-admin audit --verify` alone"
        )
    since, until = (
        now - value if isinstance(value, timedelta) else value for value in (args.since, args.until)
    )
    if since is not None and until is not None and since >= until:
        raise UsageError(
            f"--since ({since.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}) must be before --until "
            f"({until.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}): the range is [since, until)"
        )
    return AuditQuery(args.entry, args.actor, since, until)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed command line; argparse exits 2 on a usage error.

    The common flags work before or after the command name; unset ones are filled with
    None or False here (the environment is read by the caller).
    """
    args = build_parser().parse_args(argv)
    for name, unset in (
        ("json", False),
        ("target", None),
        ("timeout", None),
        ("admin_token_file", None),
        ("tls_ca", None),
        ("tls_cert", None),
        ("tls_key", None),
    ):
        if not hasattr(args, name):
            setattr(args, name, unset)
    return args


class CommandParser(argparse.ArgumentParser):
    """A command's parser: an argument it does not know is its own usage error, so the usage
    printed is the command's, not the top-level one."""

    def parse_known_args(  # type: ignore[override]  # narrower than argparse's overloads
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse `args`; anything left over stops with this command's usage (exit 2)."""
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def _installed_version() -> str:
    """The version of the installed project (the admin client ships with the server)."""
    try:
        return importlib.metadata.version("authz-service")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The `authz-admin` argument parser."""
    output = _common_flags(json=True)
    connection = _common_flags(connection=True)
    admin = _common_flags(admin=True)
    parser = argparse.ArgumentParser(
        prog="authz-admin",
        description=_DESCRIPTION,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[output, connection, admin],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_installed_version()}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=CommandParser
    )
    # No abbreviations: `--token X` must never quietly mean `--token-file X`.
    add = functools.partial(commands.add_parser, allow_abbrev=False)
    admin_parents = [output, connection, admin]

    add(
        "gen-token",
        parents=[output],
        help="print a new random token (24 random bytes, base64)",
        description="Print a new random token: 24 random bytes from `secrets`, base64.",
    )

    create = add(
        "create",
        parents=admin_parents,
        help="create an entry for a token read from stdin, --token-file or --generate",
    )
    create.add_argument("subject", help="the entry's purpose and name (no whitespace)")
    _access_flags(create)
    create.add_argument("--description", default="", help="free text about the entry")
    create.add_argument(
        "--expires", type=expiry, metavar="WHEN", help="ISO 8601 expiry (UTC if no offset)"
    )
    _new_token_flags(create)

    add("get", parents=admin_parents, help="show one entry").add_argument(
        "entry", help="the entry's id or subject"
    )

    listing = add("list", parents=admin_parents, help="list entries")
    listing.add_argument(
        "--all",
        "--include-revoked",
        dest="include_revoked",
        action="store_true",
        help="include revoked entries",
    )

    update = add(
        "update",
        parents=admin_parents,
        help="change an entry's access, description or expiry",
        description="Change an entry. --allow/--unrestricted replace its whole access.",
    )
    update.add_argument("entry", help="the entry's id or subject")
    _access_flags(update)
    update.add_argument("--description", help="new description ('' clears it)")
    expiring = update.add_mutually_exclusive_group()
    expiring.add_argument(
        "--expires", type=expiry, metavar="WHEN", help="ISO 8601 expiry (UTC if no offset)"
    )
    expiring.add_argument("--no-expiry", action="store_true", help="remove the expiry")
    _etag_flag(update)

    rotate = add(
        "rotate",
        parents=admin_parents,
        help="replace an entry's token (stdin, --token-file or --generate)",
    )
    rotate.add_argument("entry", help="the entry's id or subject")
    _new_token_flags(rotate)
    rotate.add_argument(
        "--grace",
        type=duration,
        metavar="DURATION",
        help="keep the old token working this long too (90s, 15m, 24h, 7d; at most 7d and "
        "never past the entry's expiry) [0: denied at once]",
    )
    _etag_flag(rotate)

    revoke = add("revoke", parents=admin_parents, help="revoke an entry's token at once")
    revoke.add_argument("entry", help="the entry's id or subject")
    revoke.add_argument("--reason", default="", help="why, kept for audit")

    audit = add(
        "audit",
        parents=admin_parents,
        help="show the audit log (admin writes and refusals), or --verify its hash chain",
        description="Show the audit log's events, oldest first: every admin write and every "
        "admin call refused to a known admin. --verify reads the whole log and checks its "
        "hash chain; it exits 8 at the first edited, missing or out-of-place event.",
    )
    audit.add_argument("entry", nargs="?", help="only events about this entry (id or subject)")
    audit.add_argument(
        "--actor", metavar="ENTRY", help="only events by this admin entry (id or subject)"
    )
    audit.add_argument(
        "--since",
        type=moment,
        metavar="WHEN",
        help="only events at or after WHEN: a time (2030-01-31T12:00:00Z; UTC if no offset) "
        "or a duration ago (24h)",
    )
    audit.add_argument(
        "--until", type=moment, metavar="WHEN", help="only events before WHEN (the same forms)"
    )
    audit.add_argument(
        "--verify", action="store_true", help="check the whole log's hash chain (exit 8 if broken)"
    )

    _import_backstage_command(add, admin_parents)

    check = add(
        "check",
        parents=[output, connection],
        help="ask Check whether a token (stdin or --token-file) may reach PLUGIN",
        description="Ask Check about a token read from stdin or --token-file: the raw "
        "token or a whole 'Bearer <token>' header value. Exits 1 on DENY.",
    )
    check.add_argument("plugin", help="the plugin id, e.g. catalog")
    check.add_argument("--permission", help="a permission name, e.g. catalog.entity.read")
    check.add_argument("--action", type=action, help=f"one of {', '.join(ACTIONS)}")
    check.add_argument("--token-file", metavar="FILE", help="read the token from FILE")
    check.add_argument("--token", action=RefuseTokenFlag, help=argparse.SUPPRESS)
    return parser


def _common_flags(
    *, json: bool = False, connection: bool = False, admin: bool = False
) -> CommandParser:
    # SUPPRESS keeps a flag given before the command from being reset by the subcommand's
    # parser, which knows the same flag.
    flags = CommandParser(add_help=False, allow_abbrev=False, argument_default=argparse.SUPPRESS)
    if json:
        flags.add_argument("--json", action="store_true", help="print JSON for scripts")
    if connection:
        flags.add_argument(
            "--target", metavar="HOST:PORT", help=f"the server [AUTHZ_TARGET, {DEFAULT_TARGET}]"
        )
        flags.add_argument(
            "--timeout",
            type=seconds,
            metavar="SECONDS",
            help=f"deadline of each call [{DEFAULT_TIMEOUT:g}]",
        )
        flags.add_argument(
            "--tls-ca",
            metavar="FILE",
            help="connect with TLS, trusting this PEM CA [AUTHZ_TLS_CA, plaintext]",
        )
        flags.add_argument(
            "--tls-cert",
            metavar="FILE",
            help="PEM client certificate, for a server under mTLS [AUTHZ_TLS_CLIENT_CERT]",
        )
        flags.add_argument(
            "--tls-key",
            metavar="FILE",
            help="PEM private key of --tls-cert [AUTHZ_TLS_CLIENT_KEY]",
        )
    if admin:
        flags.add_argument(
            "--admin-token-file",
            metavar="FILE",
            help="file holding the admin token [or AUTHZ_ADMIN_TOKEN]",
        )
        flags.add_argument("--admin-token", action=RefuseTokenFlag, help=argparse.SUPPRESS)
    return flags


def _access_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow",
        action="append",
        type=restriction,
        metavar=RESTRICTION_FORM,
        help=_RESTRICTION_HELP,
    )
    parser.add_argument(
        "--unrestricted",
        action="store_true",
        help="let the token reach every plugin but authz (avoid: least privilege)",
    )


def _new_token_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token", action=RefuseTokenFlag, help=argparse.SUPPRESS)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--token-file", metavar="FILE", help="read the new token from FILE")
    source.add_argument(
        "--generate",
        action="store_true",
        help="generate the token and print it once (it can never be shown again)",
    )


def _etag_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--etag", help="the etag the entry must still have (default: the one just read)"
    )


def _import_backstage_command(
    add: Callable[..., argparse.ArgumentParser], parents: Sequence[argparse.ArgumentParser]
) -> None:
    importing = add(
        "import-backstage",
        parents=parents,
        help="create entries from a Backstage app-config's backend.auth.externalAccess",
        description="Create an entry for each static token in a Backstage app-config's "
        "backend.auth.externalAccess, with its subject and access restrictions. Prints the "
        "plan first (never a token); entries already present are left as they are. Exits 9 "
        "when anything is not imported: a conflict, skipped or not importable.",
    )
    importing.add_argument(
        "app_config", metavar="APP_CONFIG.yaml", help="the app-config file (${VAR}s from the env)"
    )
    importing.add_argument(
        "--dry-run", action="store_true", help="print the plan and change nothing"
    )
    importing.add_argument(
        "--allow-unrestricted",
        action="store_true",
        help="import a token without accessRestrictions as unrestricted (every plugin but "
        "authz); without it, such a token is skipped",
    )
    importing.add_argument(
        "--check-target",
        metavar="HOST:PORT",
        help="where to ask Check when --target is a server's admin listener [--target]",
    )
