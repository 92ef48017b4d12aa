"""The seed's workflow against a real server over a real channel: create, check, rotate,
revoke, expire, and admin authentication."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from authz.v1 import authz_pb2 as pb
from server_process import ADMIN_METADATA, ServerProcess

CATALOG_READER = [
    pb.AccessRestriction(plugin="catalog", permissions=["catalog.entity.read"], actions=[pb.READ])
]
ANY_CATALOG = [pb.AccessRestriction(plugin="catalog")]


def create(
    server: ServerProcess,
    subject: str,
    token: str,
    restrictions: list[pb.AccessRestriction] | None = None,
    **fields: object,
) -> pb.Entry:
    request = pb.CreateEntryRequest(
        subject=subject,
        token=token,
        access_restrictions=ANY_CATALOG if restrictions is None else restrictions,
        **fields,
    )
    entry: pb.Entry = server.admin.CreateEntry(request, metadata=ADMIN_METADATA)
    return entry


def check(
    server: ServerProcess, token: str, plugin: str = "catalog", **fields: object
) -> pb.CheckResponse:
    answer: pb.CheckResponse = server.authz.Check(
        pb.CheckRequest(token=token, plugin=plugin, **fields)
    )
    return answer


def test_a_created_entry_allows_its_token(server: ServerProcess) -> None:
    entry = create(server, "catalog-sync", "catalog-sync-token-1", CATALOG_READER)
    answer = check(server, "catalog-sync-token-1", permission="catalog.entity.read", action=pb.READ)
    assert answer.decision == pb.ALLOW
    assert (answer.code, answer.http_status, answer.reason) == (0, 200, "")
    assert (answer.subject, answer.entry_id) == ("catalog-sync", entry.id)
    assert entry.state == pb.ACTIVE
    assert entry.etag


def test_the_authorization_header_form_is_accepted_case_insensitively(
    server: ServerProcess,
) -> None:
    create(server, "header-user", "header-user-token-1")
    answer = server.authz.Check(
        pb.CheckRequest(
            authorization="BEARER header-user-token-1", plugin="catalog", action=pb.READ
        )
    )
    assert answer.decision == pb.ALLOW


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"plugin": "scaffolder"}, "plugin_not_allowed"),
        ({"permission": "catalog.entity.delete", "action": pb.READ}, "permission_not_allowed"),
        ({"permission": "catalog.entity.read", "action": pb.DELETE}, "action_not_allowed"),
        ({"permission": "catalog.entity.read"}, "action_not_allowed"),
    ],
)
def test_each_kind_of_under_scoped_request_is_a_403(
    server: ServerProcess, fields: dict[str, object], reason: str
) -> None:
    create(server, "reader", "reader-token-12345", CATALOG_READER)
    answer = check(server, "reader-token-12345", **fields)
    assert answer.decision == pb.DENY
    assert (answer.code, answer.http_status, answer.reason) == (7, 403, reason)
    assert answer.subject == ""


@pytest.mark.parametrize(
    ("request_fields", "reason"),
    [
        ({"plugin": "catalog"}, "missing_token"),
        ({"plugin": "catalog", "authorization": "Basic dXNlcjpwYXNz"}, "malformed"),
        ({"plugin": "catalog", "token": "short"}, "malformed"),
        ({"plugin": "catalog", "token": "never-issued-token-1"}, "unknown_token"),
    ],
)
def test_missing_malformed_and_unknown_tokens_are_a_401(
    server: ServerProcess, request_fields: dict[str, object], reason: str
) -> None:
    answer = server.authz.Check(pb.CheckRequest(**request_fields))
    assert answer.decision == pb.DENY
    assert (answer.code, answer.http_status, answer.reason) == (16, 401, reason)


def test_a_revoked_token_is_denied_on_the_very_next_check(server: ServerProcess) -> None:
    entry = create(server, "to-revoke", "to-revoke-token-1")
    assert check(server, "to-revoke-token-1").decision == pb.ALLOW  # now cached
    revoked = server.admin.RevokeEntry(
        pb.RevokeEntryRequest(id=entry.id, reason="leaked"), metadata=ADMIN_METADATA
    )
    answer = check(server, "to-revoke-token-1")
    assert (answer.decision, answer.http_status, answer.reason) == (pb.DENY, 401, "revoked")
    assert revoked.state == pb.REVOKED
    assert revoked.HasField("revoke_time")
    assert revoked.revoke_reason == "leaked"
    again = server.admin.RevokeEntry(pb.RevokeEntryRequest(id=entry.id), metadata=ADMIN_METADATA)
    assert again.revoke_time == revoked.revoke_time  # idempotent


def test_revoked_entries_stay_listed_for_audit_only_when_asked(server: ServerProcess) -> None:
    entry = create(server, "audited", "audited-token-123")
    server.admin.RevokeEntry(pb.RevokeEntryRequest(id=entry.id), metadata=ADMIN_METADATA)
    default = server.admin.ListEntries(pb.ListEntriesRequest(), metadata=ADMIN_METADATA)
    everything = server.admin.ListEntries(
        pb.ListEntriesRequest(include_revoked=True), metadata=ADMIN_METADATA
    )
    assert entry.id not in {e.id for e in default.entries}
    assert entry.id in {e.id for e in everything.entries}


def test_rotation_denies_the_old_token_and_allows_the_new_one(server: ServerProcess) -> None:
    entry = create(server, "rotating", "rotating-old-token")
    assert check(server, "rotating-old-token").decision == pb.ALLOW  # now cached
    rotated = server.admin.UpdateEntry(
        pb.UpdateEntryRequest(
            entry=pb.Entry(id=entry.id), new_token="rotating-new-token", etag=entry.etag
        ),
        metadata=ADMIN_METADATA,
    )
    old = check(server, "rotating-old-token")
    assert (old.decision, old.http_status, old.reason) == (pb.DENY, 401, "unknown_token")
    new = check(server, "rotating-new-token")
    assert (new.decision, new.entry_id) == (pb.ALLOW, entry.id)
    assert rotated.etag != entry.etag
    # A rotated-away token is retired for good: no entry can take it again.
    with pytest.raises(grpc.RpcError) as raised:
        create(server, "reuser", "rotating-old-token")
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_an_update_changes_the_scope_before_it_returns(server: ServerProcess) -> None:
    entry = create(server, "widening", "widening-token-12")
    assert check(server, "widening-token-12", plugin="scaffolder").reason == "plugin_not_allowed"
    server.admin.UpdateEntry(
        pb.UpdateEntryRequest(
            entry=pb.Entry(
                id=entry.id,
                access_restrictions=[*ANY_CATALOG, pb.AccessRestriction(plugin="scaffolder")],
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["access_restrictions"]),
            etag=entry.etag,
        ),
        metadata=ADMIN_METADATA,
    )
    assert check(server, "widening-token-12", plugin="scaffolder").decision == pb.ALLOW


def test_a_stale_etag_is_aborted_and_changes_nothing(server: ServerProcess) -> None:
    entry = create(server, "etagged", "etagged-token-123")
    mask = field_mask_pb2.FieldMask(paths=["description"])
    server.admin.UpdateEntry(
        pb.UpdateEntryRequest(
            entry=pb.Entry(id=entry.id, description="first"), update_mask=mask, etag=entry.etag
        ),
        metadata=ADMIN_METADATA,
    )
    with pytest.raises(grpc.RpcError) as raised:
        server.admin.UpdateEntry(
            pb.UpdateEntryRequest(
                entry=pb.Entry(id=entry.id, description="second"), update_mask=mask, etag=entry.etag
            ),
            metadata=ADMIN_METADATA,
        )
    assert raised.value.code() == grpc.StatusCode.ABORTED
    current = server.admin.GetEntry(pb.GetEntryRequest(id=entry.id), metadata=ADMIN_METADATA)
    assert current.description == "first"


def test_an_expired_entry_is_denied_with_reason_expired(server: ServerProcess) -> None:
    expire = timestamp_pb2.Timestamp()
    expire.FromDatetime(datetime.now(UTC) + timedelta(seconds=1))
    entry = create(server, "short-lived", "short-lived-token", expire_time=expire)
    assert check(server, "short-lived-token").decision == pb.ALLOW
    deadline = time.monotonic() + 10
    answer = check(server, "short-lived-token")
    while answer.decision == pb.ALLOW and time.monotonic() < deadline:
        answer = check(server, "short-lived-token")
    assert (answer.decision, answer.http_status, answer.reason) == (pb.DENY, 401, "expired")
    seen = server.admin.GetEntry(pb.GetEntryRequest(id=entry.id), metadata=ADMIN_METADATA)
    assert seen.state == pb.EXPIRED


def test_admin_calls_without_a_token_are_unauthenticated(server: ServerProcess) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        server.admin.ListEntries(pb.ListEntriesRequest())
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as raised:
        server.admin.ListEntries(
            pb.ListEntriesRequest(), metadata=(("authorization", "Bearer not-a-real-admin"),)
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_read_only_admin_can_list_but_not_create(server: ServerProcess) -> None:
    create(
        server,
        "auditor",
        "auditor-token-1234",
        [pb.AccessRestriction(plugin="authz", permissions=["authz.entry.read"])],
    )
    auditor = (("authorization", "Bearer auditor-token-1234"),)
    listed = server.admin.ListEntries(pb.ListEntriesRequest(), metadata=auditor)
    assert {e.subject for e in listed.entries} >= {"auditor", "bootstrap-admin"}
    with pytest.raises(grpc.RpcError) as raised:
        server.admin.CreateEntry(
            pb.CreateEntryRequest(subject="x", token="another-token-123", unrestricted=True),
            metadata=auditor,
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_an_unrestricted_entry_is_never_an_admin(server: ServerProcess) -> None:
    create(server, "everything", "everything-token-1", [], unrestricted=True)
    assert check(server, "everything-token-1", plugin="scaffolder").decision == pb.ALLOW
    assert check(server, "everything-token-1", plugin="authz").reason == "plugin_not_allowed"
    with pytest.raises(grpc.RpcError) as raised:
        server.admin.ListEntries(
            pb.ListEntriesRequest(), metadata=(("authorization", "Bearer everything-token-1"),)
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_token_held_by_another_entry_is_refused_without_naming_it(server: ServerProcess) -> None:
    create(server, "holder", "shared-token-12345")
    with pytest.raises(grpc.RpcError) as raised:
        create(server, "copycat", "shared-token-12345")
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "holder" not in raised.value.details()
    assert "shared-token-12345" not in raised.value.details()


def test_listing_pages_through_every_entry_once(server: ServerProcess) -> None:
    made = {create(server, f"paged-{n}", f"paged-token-{n:03d}").id for n in range(7)}
    seen: list[str] = []
    token = ""
    while True:
        page = server.admin.ListEntries(
            pb.ListEntriesRequest(page_size=3, page_token=token), metadata=ADMIN_METADATA
        )
        assert len(page.entries) <= 3
        seen += [e.id for e in page.entries]
        token = page.next_page_token
        if not token:
            break
    assert made <= set(seen)
    assert len(seen) == len(set(seen)) == len(made) + 1  # plus bootstrap-admin
