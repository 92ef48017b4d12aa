"""The model and oracle the fuzz suites share (tests/e2e/test_fuzz_*.py).

Every RPC is fuzzed over a real channel, with a default client's limits. Each suite has one
server (with cheap argon2, see `seeded_fuzz`) that serves every example. Requests are
well-formed protobuf messages whose fields hold anything (see tests/strategies.py); the callers
are the bootstrap admin, admins holding a single right, a read-only admin, a service token with
no admin right, tokens of entries the examples created, unknown, revoked and rotated-away
tokens, garbage `authorization` values, and no credentials at all. For every call:

- the status is one the API documents for the RPC (never UNKNOWN, INTERNAL or
  RESOURCE_EXHAUSTED), and the one a model of the store predicts;
- INVALID_ARGUMENT carries google.rpc.BadRequest details naming a field, in a trailer that fits
  a default client's 8 KiB metadata limit;
- a failed admin call changes nothing: neither a stored row nor a Check answer;
- Check, Envoy's Check included, answers what the decision table says for the model's entries,
  with a code, HTTP status and reason that agree;
- no response, error or server log line holds a token the client sent;
- the server writes no traceback and no ERROR line, and exits 0 at the end.

The model (`Fuzz`) is the tests' own record of every successful write.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
import strategies as fuzzed
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, event, settings

import authz_service
from authz.v1 import authz_pb2 as pb
from authz_service.core.rules import (
    RestrictionInput,
    permission_problem,
    plugin_problem,
    token_problem,
)
from server_process import ADMIN_METADATA, BOOTSTRAP_TOKEN, ServerProcess

CHEAP_ARGON2 = {"AUTHZ_ARGON2_TIME_COST": "1", "AUTHZ_ARGON2_MEMORY_KIB": "8"}
TIMEOUT = 10.0
# A default client refuses (some or all) trailers past its soft metadata limit, 8 KiB.
DEFAULT_MAX_METADATA = 8 * 1024
# An expiry this close to now (seconds) may pass between the model's look and the server's.
CLOCK_SLACK = 5.0

Code = grpc.StatusCode
OK = Code.OK
INVALID = Code.INVALID_ARGUMENT
NOT_FOUND = Code.NOT_FOUND
EXISTS = Code.ALREADY_EXISTS
PRECONDITION = Code.FAILED_PRECONDITION
ABORTED = Code.ABORTED
UNAUTHENTICATED = Code.UNAUTHENTICATED
DENIED = Code.PERMISSION_DENIED
UNAVAILABLE = Code.UNAVAILABLE

# What each RPC may answer (the API contract, sections 3-4; grpc.health.v1). UNAVAILABLE is
# storage's transient failure, documented for every call that may touch it.
ADMIN_FAILURES = {INVALID, UNAUTHENTICATED, DENIED, UNAVAILABLE}
DOCUMENTED: dict[str, set[Code]] = {
    "Check": {OK, INVALID, UNAVAILABLE},
    "CreateEntry": {OK, EXISTS, *ADMIN_FAILURES},
    "UpdateEntry": {OK, NOT_FOUND, EXISTS, PRECONDITION, ABORTED, *ADMIN_FAILURES},
    "RevokeEntry": {OK, NOT_FOUND, *ADMIN_FAILURES},
    "GetEntry": {OK, NOT_FOUND, *ADMIN_FAILURES},
    "ListEntries": {OK, *ADMIN_FAILURES},
    # A deny is a CheckResponse: only a real failure is an RPC error.
    "EnvoyCheck": {OK, UNAVAILABLE},
    "HealthCheck": {OK, NOT_FOUND},
}
NEEDS = {
    "CreateEntry": "authz.entry.create",
    "UpdateEntry": "authz.entry.update",
    "RevokeEntry": "authz.entry.revoke",
    "GetEntry": "authz.entry.read",
    "ListEntries": "authz.entry.read",
}
ALL_RIGHTS = frozenset(fuzzed.ADMIN_PERMISSIONS)
# The action each admin permission is asked with (an authz restriction may list actions).
RIGHT_ACTIONS = {
    "authz.entry.read": pb.READ,
    "authz.entry.create": pb.CREATE,
    "authz.entry.update": pb.UPDATE,
    "authz.entry.revoke": pb.DELETE,
}
UNAUTHENTICATED_REASONS = {"missing_token", "malformed", "unknown_token", "revoked", "expired"}
FORBIDDEN_REASONS = {"plugin_not_allowed", "permission_not_allowed", "action_not_allowed"}
MIN_SECONDS = fuzzed.MIN_TIMESTAMP_SECONDS
MAX_SECONDS = fuzzed.MAX_TIMESTAMP_SECONDS
# Text the server may write whatever token was sent: its own source (field names, messages,
# reasons). A token inside it is too common a string to tell a leak from a coincidence.
_SOURCES = [
    *Path(authz_service.__file__).parent.rglob("*.py"),
    *Path(__file__).parents[1].joinpath("protos").rglob("*.proto"),
]
VOCABULARY = "\n".join(path.read_text() for path in _SOURCES)
# How much of each string the client sent is kept to tell an echo from a leak.
ECHO_CHARS = 20_000
ABSL_ERROR = re.compile(r"^[EF]\d{4} ")


def fuzz_settings(examples: int) -> settings:
    """Deterministic (no example database, a fixed seed), no deadline: calls cross a socket."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.function_scoped_fixture,
        ],
    )


# -- the answer the decision table gives ------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A Check answer: ALLOW (reason "") with the entry, or DENY with its reason."""

    allowed: bool
    reason: str = ""
    entry_id: str = ""
    subject: str = ""


class Refused:
    """The request itself is malformed: Check answers INVALID_ARGUMENT."""


REFUSED = Refused()
MISSING = Answer(allowed=False, reason="missing_token")
MALFORMED = Answer(allowed=False, reason="malformed")
UNKNOWN = Answer(allowed=False, reason="unknown_token")
Expected = Answer | Refused | None  # None: too close to an expiry to say


def presented_token(token: str, authorization: str) -> str | Answer:
    """The token a request presents (RFC 6750/7235: scheme case-insensitive, 1*SP), or a deny."""
    if not authorization:
        return token or MISSING
    scheme, _, rest = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return MALFORMED
    return rest.lstrip(" ") or MALFORMED


def expired(entry: pb.Entry) -> bool | None:
    """Whether the entry is past its expiry; None when too close to call."""
    if not entry.HasField("expire_time"):
        return False
    left = entry.expire_time.seconds + entry.expire_time.nanos / 1e9 - time.time()
    return None if abs(left) < CLOCK_SLACK else left <= 0


def decide(  # noqa: PLR0911 (one return per row of the decision table)
    entry: pb.Entry, plugin: str, permission: str, action: int
) -> Answer | None:
    """The API contract's table (section 3) for a token that matched `entry`."""
    if entry.HasField("revoke_time"):
        return Answer(allowed=False, reason="revoked")
    past = expired(entry)
    if past is None:
        return None
    if past:
        return Answer(allowed=False, reason="expired")
    allow = Answer(allowed=True, entry_id=entry.id, subject=entry.subject)
    if entry.unrestricted and plugin != "authz":
        return allow
    scope = next((r for r in entry.access_restrictions if r.plugin == plugin), None)
    if scope is None:
        return Answer(allowed=False, reason="plugin_not_allowed")
    if scope.permissions and permission and permission not in scope.permissions:
        return Answer(allowed=False, reason="permission_not_allowed")
    if scope.actions and (action == 0 or action not in scope.actions):
        return Answer(allowed=False, reason="action_not_allowed")
    return allow


@dataclass(frozen=True)
class Rights:
    """The admin rights an entry holds, read two ways the API contract's words allow.

    `effective`: the admin calls its token can make (each asks its permission with its action:
    READ, CREATE, UPDATE, DELETE). `pairs`: every (permission, action) its authz restriction
    names, empty lists meaning all. Granting what one lacks in the first reading must be
    refused; in the second it may be.
    """

    effective: frozenset[str]
    pairs: frozenset[tuple[str, int]]

    @classmethod
    def of(cls, restrictions: Iterable[pb.AccessRestriction]) -> Rights:
        for r in restrictions:
            if r.plugin == "authz":
                names = (
                    [p for p in r.permissions if p in ALL_RIGHTS]
                    if r.permissions
                    else sorted(ALL_RIGHTS)
                )
                actions = list(r.actions) or fuzzed.FOUR_ACTIONS
                effective = {p for p in names if RIGHT_ACTIONS[p] in actions}
                return cls(frozenset(effective), frozenset((p, a) for p in names for a in actions))
        return NO_RIGHTS

    def surely_lacks(self, *wanted: Rights) -> bool:
        """Whether any of `wanted` can do an admin call that these rights cannot."""
        return any(not w.effective <= self.effective for w in wanted)

    def may_lack(self, *wanted: Rights) -> bool:
        """Whether any of `wanted` holds more, in either reading."""
        return self.surely_lacks(*wanted) or any(not w.pairs <= self.pairs for w in wanted)


NO_RIGHTS = Rights(frozenset(), frozenset())


def answer_of(response: pb.CheckResponse) -> Answer:
    """The answer a CheckResponse gives, once its fields are shown to agree."""
    if response.decision == pb.ALLOW:
        assert (response.code, response.http_status, response.reason) == (0, 200, ""), response
        assert response.subject, response
        assert response.entry_id, response
        return Answer(allowed=True, entry_id=response.entry_id, subject=response.subject)
    assert response.decision == pb.DENY, response
    assert (response.subject, response.entry_id) == ("", ""), response
    if response.reason in UNAUTHENTICATED_REASONS:
        assert (response.code, response.http_status) == (16, 401), response
    else:
        assert response.reason in FORBIDDEN_REASONS, response
        assert (response.code, response.http_status) == (7, 403), response
    return Answer(allowed=False, reason=response.reason)


# -- outcomes and the generic properties ------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How a call ended: its status code and the response (OK) or the error."""

    code: Code
    response: Any = None
    error: grpc.RpcError | None = None

    def __str__(self) -> str:
        if self.error is None:
            return f"{self.code.name}"
        return f"{self.code.name}: {(self.error.details() or '')[:2000]}"


def number(value: int) -> Any:
    """An enum field's value as protobuf takes it: any int32, named in the enum or not."""
    return value


def token_parts(value: str) -> list[str]:
    """The token an authorization value carries (the whole value when it has no scheme)."""
    _, space, rest = value.partition(" ")
    part = rest.lstrip(" ") if space else value
    return [part] if len(part) >= 8 else []


def strings_of(message: Message) -> Iterator[str]:
    """Every string (and bytes, decoded) in a message, nested and repeated ones and map keys."""
    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            for key, item in value.items():
                yield from _strings_in(key)
                yield from _strings_in(item)
        elif descriptor.is_repeated:
            for item in value:
                yield from _strings_in(item)
        else:
            yield from _strings_in(value)


def _strings_in(value: object) -> Iterator[str]:
    if isinstance(value, Message):
        yield from strings_of(value)
    elif isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        yield value.decode("utf-8", "replace")


def violated_fields(error: grpc.RpcError) -> list[str]:
    """The fields google.rpc.BadRequest details name."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"INVALID_ARGUMENT without google.rpc.Status details: {error}"
    fields = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields += [v.field for v in bad_request.field_violations]
    return fields


def trailer_bytes(error: grpc.RpcError) -> int:
    """The error's trailer size as a client's metadata limit counts it (RFC 7541: +32 each)."""
    message = (error.details() or "").encode()
    # grpc-message is percent-encoded outside printable ASCII.
    size = len("grpc-status") + 2 + 32
    size += (
        len("grpc-message") + 32 + sum(1 if 0x20 <= b < 0x7F and b != 0x25 else 3 for b in message)
    )
    for item in error.trailing_metadata() or ():
        key, value = item.key, item.value
        raw = value if isinstance(value, bytes) else value.encode()
        size += len(key) + 32 + (len(base64.b64encode(raw)) if key.endswith("-bin") else len(raw))
    return size


def error_texts(error: grpc.RpcError) -> list[str]:
    """Everything an error tells the client: message, trailers, decoded status details."""
    texts = [error.details() or ""]
    for item in error.trailing_metadata() or ():
        key, value = item.key, item.value
        texts += [key, value.decode("utf-8", "replace") if isinstance(value, bytes) else value]
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:
        status = None
    if status is not None:
        texts.append(status.message)
        for detail in status.details:
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request):
                texts += strings_of(bad_request)
    return texts


def log_level(line: str) -> str:
    """A log line's level: the JSON line's, or ERROR for a gRPC core E/F line."""
    try:
        record = json.loads(line)
    except ValueError:
        return "ERROR" if ABSL_ERROR.match(line) or " ERROR " in line else ""
    return str(record.get("level", "")) if isinstance(record, dict) else ""


def micros(stamp: timestamp_pb2.Timestamp) -> int:
    """A timestamp in microseconds: the precision the store keeps."""
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000


def readable_time_problem(stamp: timestamp_pb2.Timestamp) -> bool | None:
    """True if the timestamp is out of range or not in the future; None if too close to call."""
    if not (MIN_SECONDS <= stamp.seconds <= MAX_SECONDS and 0 <= stamp.nanos < 1_000_000_000):
        return True
    left = stamp.seconds + stamp.nanos / 1e9 - time.time()
    return None if abs(left) < CLOCK_SLACK else left <= 0


def stored_view(entry: pb.Entry) -> pb.Entry:
    """The entry as a write left it: last use moves with every Check, state with the clock."""
    view = pb.Entry()
    view.CopyFrom(entry)
    view.ClearField("last_used_time")
    if view.HasField("expire_time"):
        view.ClearField("state")
    return view


def inputs(restrictions: Iterable[pb.AccessRestriction]) -> list[RestrictionInput]:
    """Restrictions as the core's rules take them."""
    return [RestrictionInput(r.plugin, list(r.permissions), list(r.actions)) for r in restrictions]


def assert_expected(outcome: Outcome, expected: set[Code]) -> None:
    """The call ended with one of the codes the model allows (counted as a hypothesis event)."""
    event(outcome.code.name)
    assert outcome.code in expected, f"expected {sorted(c.name for c in expected)}, got {outcome}"


# -- the model and the calls ------------------------------------------------------------------


class Fuzz:
    """The server, and the model of what it holds: every entry as the last write returned it.

    (A plain class, not a dataclass: hypothesis prints a failing example's arguments, and a
    dataclass field by field.)
    """

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.envoy = external_auth_pb2_grpc.AuthorizationStub(server.channel)
        self.health = health_pb2_grpc.HealthStub(server.channel)
        self.entries: dict[str, pb.Entry] = {}
        # token -> entry id; None once rotated away (retired_from says whose it was).
        self.holders: dict[str, str | None] = {}
        self.retired_from: dict[str, str] = {}
        self.protected: set[str] = set()
        self.callers: dict[str, tuple[tuple[str, str], ...]] = {}
        # Issued page tokens and the (create_time, id) cursor each continues after.
        self.page_tokens: dict[str, tuple[int, str]] = {}
        # Every token sent (8+ characters) and the client's other text, for the leak checks.
        self.secrets: set[str] = set()
        self.sent: set[str] = set()
        self.counter = 0
        self.log_read = 0

    def __repr__(self) -> str:
        return f"Fuzz(<{len(self.entries)} entries, {len(self.holders)} tokens>)"

    # The generic properties of every call.

    def call(
        self,
        rpc: str,
        invoke: Callable[[], Any],
        public: Message,
        secrets: Iterable[str],
    ) -> Outcome:
        """Make one call and check what every call must satisfy.

        `public` is the request without its tokens: what the server may echo (a subject,
        an Envoy path in a warning). `secrets` are the tokens sent, request and metadata.
        """
        secrets = {s for s in secrets if len(s) >= 8}
        self.secrets |= secrets
        self.sent |= {s[:ECHO_CHARS] for s in strings_of(public)}
        try:
            outcome = Outcome(OK, invoke())
        except grpc.RpcError as error:
            outcome = Outcome(error.code(), error=error)
        assert self.server.process.poll() is None, "the server exited: " + self.server.log[-3000:]
        assert outcome.code in DOCUMENTED[rpc], f"{rpc} answered {outcome}"
        if outcome.error is not None and outcome.code == INVALID:
            fields = violated_fields(outcome.error)
            assert fields, f"BadRequest names no field: {outcome}"
            assert all(fields), f"BadRequest names an empty field: {fields}"
            size = trailer_bytes(outcome.error)
            assert size <= DEFAULT_MAX_METADATA, f"trailer of {size} bytes for {len(fields)} fields"
        if outcome.error is not None:
            texts = set(error_texts(outcome.error))
        else:
            texts = set(strings_of(outcome.response))
        self.assert_no_leak("\x00".join(texts), secrets, f"{rpc} answer")
        self.assert_log_clean()
        return outcome

    def assert_no_leak(self, text: str, secrets: Iterable[str], where: str) -> None:
        for secret in secrets:
            if secret in text and not self.echoed(secret):
                raise AssertionError(f"{where} holds the token {secret[:80]!r}: {text[:2000]!r}")

    def echoed(self, secret: str) -> bool:
        """Whether `secret` is part of text the server may write anyway (see VOCABULARY)."""
        # A huge secret is compared by its start: the client text kept is cut at ECHO_CHARS.
        probe = secret[: ECHO_CHARS // 2]
        return secret in VOCABULARY or any(probe in text for text in self.sent)

    def assert_log_clean(self, since: int | None = None) -> None:
        start = self.log_read if since is None else since
        stored_tokens = {t for t in self.holders if len(t) >= 8} | {BOOTSTRAP_TOKEN}
        lines = self.server.lines[start:]
        self.log_read = start + len(lines)
        for line in lines:
            assert "Traceback" not in line, f"a traceback in the server log: {line[:3000]}"
            assert log_level(line) not in {"ERROR", "CRITICAL"}, f"an error logged: {line[:3000]}"
            self.assert_no_leak(line, self.secrets | stored_tokens, "a log line")

    # What the model predicts.

    def rights_of(self, metadata: Sequence[tuple[str, str]]) -> Rights | None:
        """The admin rights of the caller presenting `metadata`; None if not authenticated."""
        value = dict(metadata).get("authorization", "")
        presented = presented_token("", value) if value else MISSING
        if isinstance(presented, Answer) or token_problem(presented) is not None:
            return None
        entry_id = self.holders.get(presented)
        if entry_id is None:
            return None
        entry = self.entries[entry_id]
        if entry.HasField("revoke_time") or expired(entry) is not False:
            return None
        return Rights.of(entry.access_restrictions)

    def authorization_codes(self, rpc: str, metadata: Sequence[tuple[str, str]]) -> set[Code]:
        """UNAUTHENTICATED or PERMISSION_DENIED when the caller may not make this call at all."""
        rights = self.rights_of(metadata)
        if rights is None:
            return {UNAUTHENTICATED}
        return set() if NEEDS[rpc] in rights.effective else {DENIED}

    def expect_check(
        self, token: str, authorization: str, plugin: str, permission: str, action: int
    ) -> Expected:
        if (
            plugin_problem(plugin) is not None
            or (permission and permission_problem(permission) is not None)
            or not 0 <= action <= 4
            or (token and authorization)
        ):
            return REFUSED
        presented = presented_token(token, authorization)
        if isinstance(presented, Answer):
            return presented
        if token_problem(presented) is not None:
            return MALFORMED
        entry_id = self.holders.get(presented)
        if entry_id is None:
            return UNKNOWN
        return decide(self.entries[entry_id], plugin, permission, action)

    def active_subjects(self) -> set[str]:
        return {e.subject for e in self.entries.values() if not e.HasField("revoke_time")}

    def targets(self) -> list[str]:
        """Entries the examples may change: their own, never the fixture's."""
        return [i for i in self.entries if i not in self.protected]

    def tokens_of(self, entry_id: str) -> list[str]:
        current = [t for t, holder in self.holders.items() if holder == entry_id]
        return current + [t for t, holder in self.retired_from.items() if holder == entry_id]

    # Recording successful writes.

    def record(self, entry: pb.Entry, token: str = "") -> None:
        if token:
            for old, holder in list(self.holders.items()):
                if holder == entry.id:
                    self.holders[old] = None
                    self.retired_from[old] = entry.id
            self.holders[token] = entry.id
        self.entries[entry.id] = entry

    def snapshot(self) -> tuple[list[tuple[object, ...]], ...]:
        """Every stored row but the last-use times, which a flush may move at any moment."""
        uri = f"file:{self.server.db_path}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as db:
            entries = db.execute(
                "SELECT id, subject, description, restrictions, unrestricted, verifier,"
                " lookup_tag, create_time, update_time, revision, expire_time, revoke_time,"
                " revoke_reason FROM entries ORDER BY id"
            ).fetchall()
            retired = db.execute("SELECT * FROM retired_tokens ORDER BY 1, 2, 3, 4").fetchall()
        return entries, retired

    def assert_check_agrees(self, entry_id: str) -> None:
        """Check, for every token the entry ever had, says what the model says now."""
        entry = self.entries[entry_id]
        scope = next(iter(entry.access_restrictions), None)
        plugin = scope.plugin if scope else "catalog"
        permission = scope.permissions[0] if scope and scope.permissions else ""
        action = scope.actions[0] if scope and scope.actions else 0
        for token in self.tokens_of(entry_id):
            request = pb.CheckRequest(
                token=token, plugin=plugin, permission=permission, action=number(action)
            )
            outcome = self.call(
                "Check",
                partial(self.server.authz.Check, request, timeout=TIMEOUT),
                without(request, "token"),
                [token],
            )
            assert outcome.code == OK, outcome
            expected = self.expect_check(token, "", plugin, permission, action)
            if expected is not None:
                assert answer_of(outcome.response) == expected, (entry, token)

    # Writes the examples use to make their own targets.

    def create_target(self, scope: tuple[list[pb.AccessRestriction], bool]) -> pb.Entry:
        self.counter += 1
        token = f"fuzz-target-token-{self.counter:06}"
        restrictions, unrestricted = scope
        entry: pb.Entry = self.server.admin.CreateEntry(
            pb.CreateEntryRequest(
                subject=f"fuzz-target-{self.counter}",
                token=token,
                access_restrictions=restrictions,
                unrestricted=unrestricted,
            ),
            metadata=ADMIN_METADATA,
            timeout=TIMEOUT,
        )
        self.record(entry, token)
        self.sent.add(entry.subject)
        return entry

    def seed(
        self, name: str, token: str, *restrictions: pb.AccessRestriction, **extra: Any
    ) -> pb.Entry:
        entry: pb.Entry = self.server.admin.CreateEntry(
            pb.CreateEntryRequest(
                subject=name, token=token, access_restrictions=restrictions, **extra
            ),
            metadata=ADMIN_METADATA,
            timeout=TIMEOUT,
        )
        self.record(entry, token)
        self.protected.add(entry.id)
        self.callers[name] = (("authorization", f"Bearer {token}"),)
        return entry


def without(message: Message, *fields: str) -> Message:
    """A copy of `message` with the named fields cleared (its tokens)."""
    copy = type(message)()
    copy.CopyFrom(message)
    for name in fields:
        copy.ClearField(name)
    return copy


def authz_restriction(*permissions: str, actions: Sequence[int] = ()) -> pb.AccessRestriction:
    """A restriction to the authz plugin: admin rights."""
    return pb.AccessRestriction(
        plugin="authz", permissions=permissions, actions=[number(a) for a in actions]
    )


# -- the server a suite's examples share ------------------------------------------------------


def seeded_fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    """A fresh server and its model, with the fixture's callers and entries; stops the server
    when resumed. Each suite's module-scoped `fuzz` fixture yields from it."""
    server = ServerProcess(tmp_path_factory.mktemp("fuzz") / "authz.db", CHEAP_ARGON2)
    model = Fuzz(server)
    listing = server.admin.ListEntries(pb.ListEntriesRequest(), metadata=ADMIN_METADATA)
    (bootstrap,) = listing.entries
    model.record(bootstrap, BOOTSTRAP_TOKEN)
    model.protected.add(bootstrap.id)
    model.callers |= {"bootstrap-admin": ADMIN_METADATA, "anonymous": ()}
    model.callers["stranger"] = (("authorization", "Bearer no-such-entry-token-1"),)
    model.seed("entry-reader", "entry-reader-token-1", authz_restriction("authz.entry.read"))
    model.seed("entry-creator", "entry-creator-token-1", authz_restriction("authz.entry.create"))
    model.seed("entry-updater", "entry-updater-token-1", authz_restriction("authz.entry.update"))
    model.seed("entry-revoker", "entry-revoker-token-1", authz_restriction("authz.entry.revoke"))
    model.seed(
        "entry-manager",
        "entry-manager-token-1",
        authz_restriction("authz.entry.create", "authz.entry.update", "authz.entry.revoke"),
    )
    # Admin rights as actions shape them: all permissions but only READ is reading; create
    # asked with READ is nothing.
    model.seed("reads-by-action", "reads-by-action-token", authz_restriction(actions=[pb.READ]))
    model.seed(
        "no-rights",
        "no-rights-token-001",
        authz_restriction("authz.entry.create", actions=[pb.READ]),
    )
    model.seed(
        "catalog-service",
        "catalog-service-token-1",
        pb.AccessRestriction(
            plugin="catalog", permissions=["catalog.entity.read"], actions=[pb.READ]
        ),
        pb.AccessRestriction(plugin="events", actions=[pb.CREATE, pb.UPDATE]),
        pb.AccessRestriction(plugin="scaffolder"),
    )
    model.seed("everything", "everything-token-01", unrestricted=True)
    model.seed(
        "everything-and-reading",
        "everything-and-reading-token",
        authz_restriction("authz.entry.read", actions=[pb.READ]),
        unrestricted=True,
    )
    later = timestamp_pb2.Timestamp(seconds=int(time.time()) + 86_400)
    model.seed(
        "expiring-tomorrow",
        "expiring-tomorrow-token",
        pb.AccessRestriction(plugin="catalog"),
        expire_time=later,
    )
    revoked = model.seed("revoked", "revoked-token-0001", pb.AccessRestriction(plugin="catalog"))
    model.record(
        server.admin.RevokeEntry(pb.RevokeEntryRequest(id=revoked.id), metadata=ADMIN_METADATA)
    )
    rotated = model.seed("rotated", "rotated-away-token-1", pb.AccessRestriction(plugin="catalog"))
    change = pb.UpdateEntryRequest(
        entry=pb.Entry(id=rotated.id), new_token="rotated-in-token-1", etag=rotated.etag
    )
    model.record(server.admin.UpdateEntry(change, metadata=ADMIN_METADATA), "rotated-in-token-1")
    model.log_read = len(server.lines)
    yield model
    server.stop()
