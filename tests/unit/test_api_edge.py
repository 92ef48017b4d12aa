"""The gRPC edge without a server: the message conversions, the one error-to-status mapping,
and the servicers' translation of requests into use-case calls (the real use cases, over the
in-memory fakes, with a context object standing in for grpc.aio's)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from admin_world import OTHER_TOKEN, ROOT, T0, TOKEN, World, run
from authz.v1 import authz_pb2
from authz_service.api import AdminServicer, AuthzServicer
from authz_service.api._status import abort_for, code_of, status_of
from authz_service.api.convert import (
    audit_filter,
    audit_message,
    authorization_of,
    entry_message,
    grace_of,
    mask_paths,
    optional_time,
    peer_address,
    peer_host,
    restriction_inputs,
)
from authz_service.api.envoy import EnvoyAuthorizationServicer
from authz_service.api.servicers import USER_AGENT_CHARS
from authz_service.core.audit import AuditEvent, AuditFilter, AuditRecord
from authz_service.core.errors import (
    Aborted,
    AlreadyExists,
    AuthzError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    invalid,
)
from authz_service.core.model import Action, Entry, Restriction
from authz_service.core.rules import MAX_ACTIONS, MAX_MASK_PATHS, MAX_PERMISSIONS, MAX_RESTRICTIONS

PEER = "ipv4:10.0.0.7:51234"
HOUR = timedelta(hours=1)
R = TypeVar("R")
T = TypeVar("T")


def stamp(when: datetime) -> timestamp_pb2.Timestamp:
    made = timestamp_pb2.Timestamp()
    made.FromDatetime(when)
    return made


class Context:
    """What the servicers read of a grpc.aio ServicerContext: the invocation metadata, the
    peer, and abort, which records the status and raises as grpc.aio's does."""

    def __init__(
        self, authorization: str | None = ROOT, *, peer: str = PEER, user_agent: str = ""
    ) -> None:
        self.metadata: list[tuple[str, str | bytes]] = []
        if authorization is not None:
            self.metadata.append(("authorization", authorization))
        if user_agent:
            self.metadata.append(("user-agent", user_agent))
        self._peer = peer
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.trailing: tuple[tuple[str, str | bytes], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return tuple(self.metadata)

    def peer(self) -> str:
        return self._peer

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> None:
        self.code, self.details, self.trailing = code, details, tuple(trailing_metadata)
        raise grpc.aio.AbortError()


def servicer_context(context: Context) -> grpc.aio.ServicerContext[Any, Any]:
    """The stand-in, typed as what it stands in for."""
    return cast("grpc.aio.ServicerContext[Any, Any]", context)


def served(
    method: Callable[[R, Any], Awaitable[T]], request: R, context: Context | None = None
) -> T:
    """The answer of a servicer method to `request` (by default from the root admin)."""

    async def call() -> T:
        return await method(request, context or Context())

    return run(call())


def aborted(
    method: Callable[[R, Any], Awaitable[object]], request: R, context: Context
) -> grpc.StatusCode | None:
    """Call a servicer method that must end with an RPC error; the status code it ended with."""
    with pytest.raises(grpc.aio.AbortError):
        served(method, request, context)
    return context.code


def bad_fields(trailing: Sequence[tuple[str, str | bytes]]) -> list[str]:
    """The fields a status's google.rpc.BadRequest detail names."""
    details = dict(trailing)["grpc-status-details-bin"]
    assert isinstance(details, bytes)
    status = status_pb2.Status.FromString(details)
    request = error_details_pb2.BadRequest()
    assert len(status.details) == 1
    assert status.details[0].Unpack(request)
    return [v.field for v in request.field_violations]


# Times and durations


def test_an_unset_time_is_none_with_no_violation() -> None:
    assert optional_time(authz_pb2.CreateEntryRequest(), "expire_time", "expire_time") == (None, ())


@pytest.mark.parametrize(
    ("seconds", "nanos", "expected"),
    [
        (1_748_768_400, 123_456_789, T0 + timedelta(microseconds=123_456)),
        (-62_135_596_800, 0, datetime.min.replace(tzinfo=T0.tzinfo)),
        (253_402_300_799, 999_999_999, datetime.max.replace(tzinfo=T0.tzinfo)),
    ],
    ids=["microseconds-kept", "first-instant", "last-instant"],
)
def test_a_valid_time_keeps_its_microseconds_and_drops_finer_nanos(
    seconds: int, nanos: int, expected: datetime
) -> None:
    request = authz_pb2.CreateEntryRequest()
    request.expire_time.seconds, request.expire_time.nanos = seconds, nanos
    assert optional_time(request, "expire_time", "expire_time") == (expected, ())


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(253_402_300_800, 0), (-62_135_596_801, 0), (2**63 - 1, 0), (0, -1), (0, 1_000_000_000)],
    ids=["after-9999", "before-year-1", "int64-max", "negative-nanos", "a-second-of-nanos"],
)
def test_a_time_out_of_the_timestamp_range_is_a_violation_naming_its_path(
    seconds: int, nanos: int
) -> None:
    request = authz_pb2.UpdateEntryRequest()
    request.entry.expire_time.seconds, request.entry.expire_time.nanos = seconds, nanos
    assert optional_time(request.entry, "expire_time", "entry.expire_time") == (
        None,
        (FieldViolation("entry.expire_time", "is not a valid timestamp"),),
    )


def test_an_unset_grace_is_none_and_a_set_one_its_timedelta() -> None:
    assert grace_of(authz_pb2.UpdateEntryRequest()) is None
    zero = authz_pb2.UpdateEntryRequest(previous_token_grace=duration_pb2.Duration())
    assert grace_of(zero) == timedelta(0)
    span = duration_pb2.Duration(seconds=3600, nanos=500_000_999)
    assert grace_of(authz_pb2.UpdateEntryRequest(previous_token_grace=span)) == timedelta(
        hours=1, microseconds=500_000
    )


@pytest.mark.parametrize(
    ("seconds", "clamped"), [(2**63 - 1, 10**10), (-(2**63), -(10**10)), (-60, -60)]
)
def test_a_huge_or_negative_grace_is_clamped_to_what_a_timedelta_holds(
    seconds: int, clamped: int
) -> None:
    span = duration_pb2.Duration(seconds=seconds)
    grace = grace_of(authz_pb2.UpdateEntryRequest(previous_token_grace=span))
    assert grace == timedelta(seconds=clamped)


def test_an_audit_filter_carries_its_ids_and_times() -> None:
    request = authz_pb2.ListAuditEventsRequest(
        entry_id="id-target", actor_entry_id="id-actor", since=stamp(T0), until=stamp(T0 + HOUR)
    )
    assert audit_filter(request) == (AuditFilter("id-target", "id-actor", T0, T0 + HOUR), ())
    assert audit_filter(authz_pb2.ListAuditEventsRequest()) == (AuditFilter(), ())


def test_an_audit_filter_reports_each_unreadable_time_by_its_name() -> None:
    request = authz_pb2.ListAuditEventsRequest(entry_id="id-target")
    request.since.nanos = -1
    request.until.seconds = 2**62
    wanted, unreadable = audit_filter(request)
    assert wanted == AuditFilter("id-target")
    assert [v.field for v in unreadable] == ["since", "until"]


# Entries and audit events as messages


def full_entry(**fields: Any) -> Entry:
    """An active entry, rotated with a grace, that has been used, secrets included, at T0."""
    entry = Entry(
        id="id-catalog-sync",
        subject="catalog-sync",
        description="syncs the catalog",
        restrictions=(Restriction("catalog", ("catalog.entity.read",), (Action.READ,)),),
        unrestricted=False,
        verifier="fake$current-verifier",
        lookup_tag=1_234_567,
        create_time=T0 + timedelta(microseconds=7),
        update_time=T0 + timedelta(seconds=1),
        revision=3,
        expire_time=T0 + 2 * HOUR,
        last_used_time=T0 + timedelta(minutes=5),
        etag="etag-3",
        previous_verifier="fake$previous-verifier",
        previous_lookup_tag=7_654_321,
        previous_expire_time=T0 + HOUR,
    )
    return replace(entry, **fields)


def test_an_entry_message_holds_the_public_fields_and_no_verifier_or_lookup_tag() -> None:
    message = entry_message(full_entry(), T0)
    assert {field.name for field, _ in message.ListFields()} == {
        "id",
        "subject",
        "description",
        "access_restrictions",
        "state",
        "create_time",
        "update_time",
        "expire_time",
        "last_used_time",
        "etag",
        "previous_token_expire_time",
    }  # unrestricted is False, and the entry is not revoked
    assert b"verifier" not in message.SerializeToString()
    revoked = entry_message(full_entry(revoke_time=T0, revoke_reason="leaked"), T0)
    assert (revoked.revoke_time, revoked.revoke_reason) == (stamp(T0), "leaked")
    assert message.access_restrictions[0] == authz_pb2.AccessRestriction(
        plugin="catalog", permissions=["catalog.entity.read"], actions=[authz_pb2.READ]
    )
    assert (message.create_time.seconds, message.create_time.nanos) == (
        stamp(T0).seconds,
        7000,
    )
    assert message.last_used_time.ToDatetime(T0.tzinfo) == T0 + timedelta(minutes=5)


def test_an_entry_message_leaves_unset_the_times_the_entry_has_not() -> None:
    bare = full_entry(
        expire_time=None, revoke_time=None, last_used_time=None, previous_expire_time=None
    )
    message = entry_message(bare, T0)
    for name in ("expire_time", "revoke_time", "last_used_time", "previous_token_expire_time"):
        assert not message.HasField(name), name


def test_the_previous_token_expire_time_is_shown_only_while_it_is_in_the_future() -> None:
    entry = full_entry()
    assert entry_message(entry, T0).previous_token_expire_time == stamp(T0 + HOUR)
    last_instant = T0 + HOUR - timedelta(microseconds=1)
    assert entry_message(entry, last_instant).HasField("previous_token_expire_time")
    assert not entry_message(entry, T0 + HOUR).HasField("previous_token_expire_time")


@pytest.mark.parametrize(
    ("fields", "now"),
    [({"revoke_time": T0}, T0), ({"expire_time": T0 + HOUR / 2}, T0 + HOUR / 2)],
    ids=["revoked", "expired"],
)
def test_the_previous_token_expire_time_is_not_shown_once_the_entry_is_not_active(
    fields: dict[str, datetime], now: datetime
) -> None:
    message = entry_message(full_entry(**fields), now)
    assert message.state != authz_pb2.ACTIVE
    assert not message.HasField("previous_token_expire_time")


@pytest.mark.parametrize(
    ("revoked", "now", "state"),
    [
        (False, T0 + HOUR, authz_pb2.ACTIVE),
        (False, T0 + 2 * HOUR, authz_pb2.EXPIRED),
        (True, T0, authz_pb2.REVOKED),
        (True, T0 + 3 * HOUR, authz_pb2.REVOKED),
    ],
    ids=["before-expiry", "at-expiry", "revoked", "revoked-and-expired"],
)
def test_an_entry_message_states_the_entry_as_it_is_at_now(
    revoked: bool, now: datetime, state: int
) -> None:
    entry = full_entry(revoke_time=T0 if revoked else None)
    assert entry_message(entry, now).state == state


def test_an_audit_message_copies_every_field_of_the_event() -> None:
    record = AuditRecord(
        time=T0 + timedelta(microseconds=42),
        actor_entry_id="id-root-admin",
        actor_subject="root-admin",
        rpc="UpdateEntry",
        entry_id="id-catalog-sync",
        changes=(("description", '"old"', '"new"'), ("token", "null", '"(new token)"')),
        code=7,
        peer="10.0.0.7",
        user_agent="authz-admin/1.0",
    )
    event = AuditEvent(sequence=3, record=record, previous_hash="ab" * 32, hash="cd" * 32)
    expected = authz_pb2.AuditEvent(
        sequence=3,
        time=timestamp_pb2.Timestamp(seconds=stamp(T0).seconds, nanos=42_000),
        actor_entry_id="id-root-admin",
        actor_subject="root-admin",
        rpc="UpdateEntry",
        entry_id="id-catalog-sync",
        changes=[
            authz_pb2.FieldChange(field="description", before='"old"', after='"new"'),
            authz_pb2.FieldChange(field="token", before="null", after='"(new token)"'),
        ],
        code=7,
        peer="10.0.0.7",
        user_agent="authz-admin/1.0",
        previous_hash="ab" * 32,
        hash="cd" * 32,
    )
    assert audit_message(event) == expected


# Lists cut one past their limits, callers and metadata


def test_restriction_lists_are_cut_one_past_their_limits_and_keep_their_order() -> None:
    over = authz_pb2.AccessRestriction(
        plugin="catalog",
        permissions=[f"catalog.p{n}" for n in range(MAX_PERMISSIONS + 50)],
        actions=[authz_pb2.READ] * (MAX_ACTIONS + 50),
    )
    inputs = restriction_inputs([over] * (MAX_RESTRICTIONS + 50))
    assert len(inputs) == MAX_RESTRICTIONS + 1
    assert inputs[0].permissions == [f"catalog.p{n}" for n in range(MAX_PERMISSIONS + 1)]
    assert list(inputs[0].actions) == [authz_pb2.READ] * (MAX_ACTIONS + 1)


def test_restriction_lists_at_their_limits_are_kept_whole() -> None:
    full = authz_pb2.AccessRestriction(
        plugin="catalog",
        permissions=[f"catalog.p{n}" for n in range(MAX_PERMISSIONS)],
        actions=[authz_pb2.CREATE, authz_pb2.READ, authz_pb2.UPDATE, authz_pb2.DELETE],
    )
    inputs = restriction_inputs([full] * MAX_RESTRICTIONS)
    assert len(inputs) == MAX_RESTRICTIONS
    assert (len(inputs[-1].permissions), len(inputs[-1].actions)) == (MAX_PERMISSIONS, MAX_ACTIONS)


def test_mask_paths_are_cut_one_past_their_limit() -> None:
    paths = [f"path{n}" for n in range(MAX_MASK_PATHS + 50)]
    assert mask_paths(field_mask_pb2.FieldMask(paths=paths)) == paths[: MAX_MASK_PATHS + 1]
    assert mask_paths(field_mask_pb2.FieldMask(paths=paths[:3])) == paths[:3]


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:192.0.2.10:1", "192.0.2.10"),
        ("ipv4:192.0.2.10:65535", "192.0.2.10"),
        ("ipv6:%5B2001:db8:aa:bb:1::1%5D:50000", "2001:db8:aa:bb::/64"),
        ("ipv6:%5B2001:db8:aa:bb:ffff::2%5D:50001", "2001:db8:aa:bb::/64"),
        ("ipv6:%5Bfe80::1%25eth0%5D:443", "fe80::/64"),
        ("ipv6:%5B::ffff:198.51.100.4%5D:443", "198.51.100.4"),
        ("unix:/run/authz/admin.sock", "unix:/run/authz/admin.sock"),
        ("unix-abstract:authz", "unix-abstract:authz"),
    ],
)
def test_a_peer_s_host_is_its_address_without_the_port_and_an_ipv6_one_its_64(
    peer: str, host: str
) -> None:
    assert peer_host(peer) == host


def test_the_authorization_is_the_first_text_authorization_value() -> None:
    assert authorization_of(servicer_context(Context(None))) == ""
    context = Context(None, user_agent="authz-admin/1.0")
    context.metadata[:0] = [("authorization", b"Bearer binary"), ("authorization", ROOT)]
    context.metadata.append(("authorization", "Bearer a-later-value"))
    assert authorization_of(servicer_context(context)) == ROOT


# Errors as statuses

MAPPED = [
    (InvalidArgument([FieldViolation("subject", "is required")]), grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound("no entry has this id"), grpc.StatusCode.NOT_FOUND),
    (AlreadyExists("subject: taken"), grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition("revoked"), grpc.StatusCode.FAILED_PRECONDITION),
    (Aborted("etag: stale"), grpc.StatusCode.ABORTED),
    (Unauthenticated("no token"), grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied("not granted"), grpc.StatusCode.PERMISSION_DENIED),
    (Unavailable("disk full"), grpc.StatusCode.UNAVAILABLE),
]


@pytest.mark.parametrize(("error", "code"), MAPPED, ids=[type(e).__name__ for e, _ in MAPPED])
def test_each_error_ends_the_call_with_its_status_code_and_message(
    error: AuthzError, code: grpc.StatusCode
) -> None:
    status = status_of(error)
    assert (code_of(error), status.code, status.details) == (code, code, str(error))


def error_classes(root: type[AuthzError]) -> set[type[AuthzError]]:
    """Every class below `root`, however deep."""
    below = set(root.__subclasses__())
    return below.union(*(error_classes(c) for c in below))


def test_every_error_class_has_a_status_code_of_its_own() -> None:
    assert {type(e) for e, _ in MAPPED} == error_classes(AuthzError)
    assert len({code for _, code in MAPPED}) == len(MAPPED)
    assert code_of(AuthzError("the root, never raised")) == grpc.StatusCode.INTERNAL


def test_an_error_without_a_message_says_its_code() -> None:
    assert status_of(NotFound()).details == "not_found"


def test_invalid_argument_carries_a_bad_request_naming_each_field() -> None:
    error = InvalidArgument(
        [FieldViolation("subject", "is required"), FieldViolation("token", "is too short")]
    )
    status = status_of(error)
    assert bad_fields(status.trailing_metadata) == ["subject", "token"]
    assert status.details == "subject: is required; token: is too short"


def test_an_error_other_than_invalid_argument_carries_no_details() -> None:
    assert bad_fields(status_of(invalid("id", "is required")).trailing_metadata) == ["id"]
    details = dict(status_of(NotFound("gone")).trailing_metadata)["grpc-status-details-bin"]
    assert isinstance(details, bytes)
    assert status_pb2.Status.FromString(details) == status_pb2.Status(
        code=grpc.StatusCode.NOT_FOUND.value[0], message="gone"
    )


def test_invalid_argument_with_many_fields_names_ten_and_counts_the_rest() -> None:
    error = InvalidArgument([FieldViolation(f"f{n}", "bad") for n in range(25)])
    status = status_of(error)
    assert bad_fields(status.trailing_metadata) == [f"f{n}" for n in range(10)]
    assert status.details.endswith("; and 15 more")


def test_an_unexpected_exception_ends_internal_and_logs_its_type_not_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    context = Context()
    secret = "Bearer leaked-token-0001"
    with (
        caplog.at_level(logging.ERROR, "authz_service.api"),
        pytest.raises(grpc.aio.AbortError),
    ):
        run(abort_for(servicer_context(context), ValueError(secret), "CreateEntry"))
    assert (context.code, context.details) == (grpc.StatusCode.INTERNAL, "internal error")
    assert code_of(ValueError(secret)) == grpc.StatusCode.INTERNAL
    assert "unexpected ValueError in CreateEntry" in caplog.text
    assert secret not in caplog.text
    assert all(secret.encode() not in str(value).encode() for _, value in context.trailing)


# The servicers over the real use cases


@pytest.fixture
def admin(world: World) -> AdminServicer:
    return AdminServicer(world.admin, clock=world.clock)


def create_request(**fields: Any) -> authz_pb2.CreateEntryRequest:
    fields.setdefault("subject", "catalog-sync")
    fields.setdefault("token", TOKEN)
    fields.setdefault("access_restrictions", [authz_pb2.AccessRestriction(plugin="catalog")])
    return authz_pb2.CreateEntryRequest(**fields)


def created(admin: AdminServicer, **fields: Any) -> authz_pb2.Entry:
    return served(admin.CreateEntry, create_request(**fields))


def test_create_entry_passes_every_field_and_answers_without_the_token(
    world: World, admin: AdminServicer
) -> None:
    restriction = authz_pb2.AccessRestriction(
        plugin="catalog", permissions=["catalog.entity.read"], actions=[authz_pb2.READ]
    )
    request = create_request(
        description="syncs the catalog",
        access_restrictions=[restriction],
        expire_time=stamp(T0 + 24 * HOUR),
    )
    entry = served(admin.CreateEntry, request)
    stored = world.store.get(entry.id)
    assert entry == entry_message(stored, T0)
    assert (stored.subject, stored.description) == ("catalog-sync", "syncs the catalog")
    assert stored.restrictions == (
        Restriction("catalog", ("catalog.entity.read",), (Action.READ,)),
    )
    assert stored.expire_time == T0 + 24 * HOUR
    assert TOKEN.encode() not in entry.SerializeToString()
    assert run(world.checker.check(TOKEN, "", "catalog", "catalog.entity.read", 2)).allowed


def test_an_admin_call_records_its_callers_host_and_user_agent_cut_to_its_limit(
    world: World, admin: AdminServicer
) -> None:
    context = Context(user_agent="a" * (USER_AGENT_CHARS + 100))
    entry = served(admin.CreateEntry, create_request(), context)
    record = world.store.audit()[-1].record
    assert (record.rpc, record.entry_id, record.actor_subject) == (
        "CreateEntry",
        entry.id,
        "root-admin",
    )
    assert (record.peer, record.user_agent) == ("10.0.0.7", "a" * USER_AGENT_CHARS)


def test_an_unreadable_expire_time_is_named_only_to_an_authorized_caller(
    admin: AdminServicer,
) -> None:
    request = create_request()
    request.expire_time.seconds = 2**62
    context = Context()
    assert aborted(admin.CreateEntry, request, context) == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(context.trailing) == ["expire_time"]
    stranger = Context(None)
    assert aborted(admin.CreateEntry, request, stranger) == grpc.StatusCode.UNAUTHENTICATED
    assert "expire_time" not in stranger.details


def test_a_request_with_too_many_restrictions_is_refused_as_too_long(
    admin: AdminServicer,
) -> None:
    plugins = [authz_pb2.AccessRestriction(plugin=f"p{n}") for n in range(10 * MAX_RESTRICTIONS)]
    context = Context()
    request = create_request(access_restrictions=plugins)
    assert aborted(admin.CreateEntry, request, context) == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(context.trailing) == ["access_restrictions"]
    assert f"at most {MAX_RESTRICTIONS} restrictions" in context.details


def test_update_entry_reads_the_id_etag_mask_and_masked_values_only(
    world: World, admin: AdminServicer
) -> None:
    before = created(admin)
    world.clock.advance(60)
    request = authz_pb2.UpdateEntryRequest(
        entry=authz_pb2.Entry(
            id=before.id,
            description="new words",
            access_restrictions=[authz_pb2.AccessRestriction(plugin="scaffolder")],
            expire_time=stamp(T0 + 24 * HOUR),
        ),
        etag=before.etag,
        update_mask=field_mask_pb2.FieldMask(paths=["description", "expire_time"]),
    )
    after = served(admin.UpdateEntry, request)
    stored = world.store.get(before.id)
    assert after == entry_message(stored, world.clock())
    assert (stored.description, stored.expire_time) == ("new words", T0 + 24 * HOUR)
    assert stored.restrictions == (Restriction("catalog"),)
    assert after.etag != before.etag


def test_an_unreadable_expire_time_on_update_counts_only_when_the_mask_names_it(
    admin: AdminServicer,
) -> None:
    before = created(admin)
    request = authz_pb2.UpdateEntryRequest(
        entry=authz_pb2.Entry(id=before.id, description="x"),
        etag=before.etag,
        update_mask=field_mask_pb2.FieldMask(paths=["expire_time"]),
    )
    request.entry.expire_time.nanos = -1
    context = Context()
    assert aborted(admin.UpdateEntry, request, context) == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(context.trailing) == ["entry.expire_time"]
    request.update_mask.paths[:] = ["description"]
    assert served(admin.UpdateEntry, request).description == "x"


def test_a_rotation_with_a_grace_answers_when_the_old_token_stops_working(
    world: World, admin: AdminServicer
) -> None:
    before = created(admin)
    request = authz_pb2.UpdateEntryRequest(
        entry=authz_pb2.Entry(id=before.id),
        etag=before.etag,
        new_token=OTHER_TOKEN,
        previous_token_grace=duration_pb2.Duration(seconds=3600),
    )
    after = served(admin.UpdateEntry, request)
    assert after.previous_token_expire_time == stamp(T0 + HOUR)
    assert run(world.check(TOKEN)).allowed
    assert run(world.check(OTHER_TOKEN)).allowed


@pytest.mark.parametrize(
    ("seconds", "problem"),
    [(2**63 - 1, "must be at most 7d"), (-(2**63), "must not be negative")],
    ids=["huge", "negative"],
)
def test_a_grace_past_the_timedelta_range_is_refused_not_an_internal_error(
    admin: AdminServicer, seconds: int, problem: str
) -> None:
    before = created(admin)
    request = authz_pb2.UpdateEntryRequest(
        entry=authz_pb2.Entry(id=before.id),
        etag=before.etag,
        new_token=OTHER_TOKEN,
        previous_token_grace=duration_pb2.Duration(seconds=seconds),
    )
    context = Context()
    assert aborted(admin.UpdateEntry, request, context) == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(context.trailing) == ["previous_token_grace"]
    assert problem in context.details


def test_revoke_entry_passes_the_reason_and_answers_the_revoked_entry(
    world: World, admin: AdminServicer
) -> None:
    before = created(admin)
    request = authz_pb2.RevokeEntryRequest(id=before.id, reason="leaked in a log")
    after = served(admin.RevokeEntry, request)
    assert (after.state, after.revoke_reason) == (authz_pb2.REVOKED, "leaked in a log")
    assert after.revoke_time == stamp(T0)
    assert run(world.check(TOKEN)).reason == "revoked"


def test_get_entry_answers_the_state_at_the_servicers_clock(
    world: World, admin: AdminServicer
) -> None:
    before = created(admin, expire_time=stamp(T0 + HOUR))
    assert before.state == authz_pb2.ACTIVE
    world.clock.advance(3600)
    after = served(admin.GetEntry, authz_pb2.GetEntryRequest(id=before.id))
    assert (after.id, after.state) == (before.id, authz_pb2.EXPIRED)


def test_get_entry_of_an_unknown_id_ends_not_found(admin: AdminServicer) -> None:
    context = Context()
    request = authz_pb2.GetEntryRequest(id="no-such-id")
    assert aborted(admin.GetEntry, request, context) == grpc.StatusCode.NOT_FOUND
    assert "no-such-id" not in context.details


def test_list_entries_passes_the_page_size_page_token_and_include_revoked(
    world: World, admin: AdminServicer
) -> None:
    revoked = created(admin)
    served(admin.RevokeEntry, authz_pb2.RevokeEntryRequest(id=revoked.id))
    world.clock.advance(1)  # listed in creation order
    kept = created(admin, subject="scaffolder-job", token=OTHER_TOKEN)

    def listed(**fields: Any) -> tuple[list[str], str]:
        page = served(admin.ListEntries, authz_pb2.ListEntriesRequest(**fields))
        return [e.subject for e in page.entries], page.next_page_token

    assert listed() == (["root-admin", "scaffolder-job"], "")
    first, token = listed(page_size=2, include_revoked=True)
    assert first == ["root-admin", "catalog-sync"]
    assert listed(page_size=2, include_revoked=True, page_token=token) == (["scaffolder-job"], "")
    assert kept.state == authz_pb2.ACTIVE


def test_list_audit_events_passes_its_filters_and_answers_the_events(
    world: World, admin: AdminServicer
) -> None:
    first = created(admin)
    world.clock.advance(60)
    second = created(admin, subject="scaffolder-job", token=OTHER_TOKEN)

    def listed(**fields: Any) -> list[str]:
        request = authz_pb2.ListAuditEventsRequest(**fields)
        page = served(admin.ListAuditEvents, request)
        return [e.entry_id for e in page.events]

    assert listed() == [first.id, second.id]
    assert listed(entry_id=second.id) == [second.id]
    assert listed(since=stamp(T0 + timedelta(seconds=1))) == [second.id]
    assert listed(until=stamp(T0 + timedelta(seconds=1))) == [first.id]
    assert listed(actor_entry_id="id-nobody") == []
    page = served(admin.ListAuditEvents, authz_pb2.ListAuditEventsRequest(page_size=1))
    assert page.next_page_token
    assert page.events[0] == audit_message(world.store.audit()[0])


def test_an_unreadable_audit_time_is_named_only_to_an_authorized_caller(
    admin: AdminServicer,
) -> None:
    request = authz_pb2.ListAuditEventsRequest()
    request.since.seconds = -(2**62)
    context = Context()
    assert aborted(admin.ListAuditEvents, request, context) == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(context.trailing) == ["since"]
    stranger = Context(f"Bearer {OTHER_TOKEN}")
    assert aborted(admin.ListAuditEvents, request, stranger) == grpc.StatusCode.UNAUTHENTICATED


def test_every_admin_call_is_counted_by_rpc_and_status_code(admin: AdminServicer) -> None:
    created(admin)
    context = Context()
    aborted(admin.CreateEntry, create_request(), context)  # the subject is taken
    anonymous = Context(None)
    aborted(admin.GetEntry, authz_pb2.GetEntryRequest(id="x"), anonymous)
    assert admin.calls.counts == {
        ("CreateEntry", "OK"): 1,
        ("CreateEntry", "ALREADY_EXISTS"): 1,
        ("GetEntry", "UNAUTHENTICATED"): 1,
    }


def test_a_check_answers_allow_with_the_entry_s_identity(world: World) -> None:
    entry = world.seed(TOKEN, "catalog-sync", (Restriction("catalog", (), (Action.READ,)),))
    request = authz_pb2.CheckRequest(
        authorization=f"Bearer {TOKEN}", plugin="catalog", action=authz_pb2.READ
    )
    response = served(AuthzServicer(world.checker).Check, request)
    assert response == authz_pb2.CheckResponse(
        decision=authz_pb2.ALLOW,
        code=0,
        http_status=200,
        subject="catalog-sync",
        entry_id=entry.id,
    )


def test_a_denied_check_is_an_answer_not_an_rpc_error(world: World) -> None:
    world.seed(TOKEN, "catalog-sync", (Restriction("catalog", (), (Action.READ,)),))
    request = authz_pb2.CheckRequest(token=TOKEN, plugin="catalog", action=authz_pb2.DELETE)
    context = Context()
    response = served(AuthzServicer(world.checker).Check, request, context)
    assert (response.decision, response.http_status) == (authz_pb2.DENY, 403)
    assert response.reason == "action_not_allowed"
    assert context.code is None


def test_a_check_with_an_action_out_of_range_ends_invalid_argument(world: World) -> None:
    request = authz_pb2.CheckRequest(
        token=TOKEN, plugin="catalog", action=cast("authz_pb2.Action", 9)
    )
    context = Context()
    assert aborted(AuthzServicer(world.checker).Check, request, context) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert bad_fields(context.trailing) == ["action"]


def test_a_cold_check_takes_the_turn_of_the_caller_s_host(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.seed(TOKEN, "catalog-sync", (Restriction("catalog"),))
    turns: list[str] = []
    queued = world.checker.hash_queue.run

    async def recorded(caller: str, *args: Any) -> Any:
        turns.append(caller)
        return await queued(caller, *args)

    monkeypatch.setattr(world.checker.hash_queue, "run", recorded)
    request = authz_pb2.CheckRequest(token=TOKEN, plugin="catalog")
    context = Context(peer="ipv6:%5B2001:db8:aa:bb::7%5D:50000")
    assert served(AuthzServicer(world.checker).Check, request, context).decision == authz_pb2.ALLOW
    assert turns == ["2001:db8:aa:bb::/64"]


def envoy_check(authorization: str) -> external_auth_pb2.CheckRequest:
    """An Envoy check of a GET on a route naming the catalog plugin."""
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.headers["authorization"] = "GET", authorization
    request.attributes.context_extensions["plugin"] = "catalog"
    return request


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (Unavailable("database is locked"), grpc.StatusCode.UNAVAILABLE),
        (RuntimeError("Bearer leaked-token-0001"), grpc.StatusCode.INTERNAL),
    ],
    ids=["unavailable", "unexpected"],
)
def test_a_check_whose_store_fails_ends_with_an_rpc_error_not_a_deny(
    world: World, monkeypatch: pytest.MonkeyPatch, failure: Exception, code: grpc.StatusCode
) -> None:
    world.seed(TOKEN, "catalog-sync", (Restriction("catalog"),))

    def failing(tag: int) -> list[Entry]:
        raise failure

    monkeypatch.setattr(world.store, "find_tag", failing)
    request = authz_pb2.CheckRequest(token=TOKEN, plugin="catalog")
    context = Context()
    assert aborted(AuthzServicer(world.checker).Check, request, context) == code
    assert "leaked-token" not in context.details
    envoy = EnvoyAuthorizationServicer(world.checker)
    envoy_request = envoy_check(f"Bearer {TOKEN}")
    context = Context()
    assert aborted(envoy.Check, envoy_request, context) == code


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.7:51234", "10.0.0.7"),
        ("ipv6:%5B2001:db8::7%5D:51234", "2001:db8::7"),
        ("ipv6:[::1]:51234", "::1"),
        ("unix:/run/authz.sock", "unix:/run/authz.sock"),
    ],
)
def test_the_audit_log_records_the_caller_s_whole_address_without_its_port(
    peer: str, address: str
) -> None:
    assert peer_address(peer) == address
