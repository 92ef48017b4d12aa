"""The Check decision table (DESIGN section 3), row by row, with reason, code and HTTP status.

Expected decisions are spelled with literal codes (16, 7, 0) and statuses (401, 403, 200), so a
wrong constant in the core fails here rather than being compared with itself.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz_service.core.decision import (
    DENY_UNKNOWN_TOKEN,
    Decision,
    Policy,
    Reason,
    bearer_token,
    decide,
)
from authz_service.core.errors import FieldViolation, InvalidArgument
from authz_service.core.model import Action, AdminPermission, Entry, Restriction, State

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ENTRY_ID = "0197-entry-id"
SUBJECT = "ci-deploy"
TOKEN = "q83vEjRWeJAAESIzRFVmd3iZqrvM3e7/"

ALLOW = Decision(True, 0, 200, "", SUBJECT, ENTRY_ID)


def unauthenticated(reason: str) -> Decision:
    """A DENY that means 'who are you?': UNAUTHENTICATED, HTTP 401."""
    return Decision(False, 16, 401, reason)


def forbidden(reason: str) -> Decision:
    """A DENY that means 'not you': PERMISSION_DENIED, HTTP 403."""
    return Decision(False, 7, 403, reason)


def entry(
    *restrictions: Restriction,
    unrestricted: bool = False,
    expire_time: datetime | None = None,
    revoke_time: datetime | None = None,
) -> Entry:
    """An entry with the given scope; verifier and lookup tag are placeholders."""
    return Entry(
        id=ENTRY_ID,
        subject=SUBJECT,
        description="",
        restrictions=restrictions,
        unrestricted=unrestricted,
        verifier="$argon2id$placeholder",
        lookup_tag=0,
        create_time=NOW - timedelta(days=30),
        update_time=NOW - timedelta(days=30),
        expire_time=expire_time,
        revoke_time=revoke_time,
    )


def check(
    subject_entry: Entry,
    plugin: str,
    permission: str = "",
    action: Action | None = None,
    now: datetime = NOW,
) -> Decision:
    """Decide for a token already matched to `subject_entry`."""
    return decide(Policy.of(subject_entry), plugin, permission, action, now.timestamp())


CATALOG_READ = Restriction("catalog", ("catalog.entity.read",), (Action.READ,))


@st.composite
def plugin_ids(draw: st.DrawFn) -> str:
    """Valid plugin ids other than the reserved `authz`."""
    lower_alnum = string.ascii_lowercase + string.digits
    first = draw(st.sampled_from(string.ascii_lowercase)) + draw(st.text(lower_alnum, max_size=8))
    rest = draw(
        st.lists(
            st.tuples(st.sampled_from("-_"), st.text(lower_alnum, min_size=1, max_size=8)),
            max_size=3,
        )
    )
    plugin = first + "".join(sep + word for sep, word in rest)
    return plugin if plugin != "authz" else "authz-tools"


ACTIONS = st.one_of(st.none(), st.sampled_from(Action))


# --- the reasons --------------------------------------------------------------------------


def test_the_reasons_are_exactly_the_eight_words_of_the_contract() -> None:
    assert {r.value for r in Reason} == {
        "missing_token",
        "malformed",
        "unknown_token",
        "revoked",
        "expired",
        "plugin_not_allowed",
        "permission_not_allowed",
        "action_not_allowed",
    }


# --- no token, empty token, malformed header ----------------------------------------------


def test_no_token_and_no_authorization_is_denied_with_reason_missing_token() -> None:
    assert bearer_token("", "") == unauthenticated("missing_token")


def test_a_raw_token_is_presented_as_it_is() -> None:
    assert bearer_token(TOKEN, "") == TOKEN


def test_a_bearer_header_presents_the_token_after_the_scheme() -> None:
    assert bearer_token("", f"Bearer {TOKEN}") == TOKEN


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    assert bearer_token("", f"{scheme} {TOKEN}") == TOKEN


def test_several_spaces_after_the_scheme_are_allowed() -> None:
    assert bearer_token("", f"Bearer   {TOKEN}") == TOKEN


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic x",
        "Basic dXNlcjpwYXNzd29yZA==",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "bearer ",
        f"Token {TOKEN}",
        f"Bearer{TOKEN}",
        f"Bearer\t{TOKEN}",
        TOKEN,
        " ",
    ],
    ids=repr,
)
def test_a_malformed_authorization_header_is_denied_with_reason_malformed(
    authorization: str,
) -> None:
    assert bearer_token("", authorization) == unauthenticated("malformed")


def test_setting_both_token_and_authorization_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as raised:
        bearer_token(TOKEN, f"Bearer {TOKEN}")
    assert [v.field for v in raised.value.violations] == ["authorization"]


def test_the_both_fields_error_never_repeats_the_token() -> None:
    with pytest.raises(InvalidArgument) as raised:
        bearer_token(TOKEN, f"Bearer {TOKEN}")
    assert TOKEN not in str(raised.value)
    assert all(TOKEN not in v.description for v in raised.value.violations)


@pytest.mark.parametrize("authorization", ["Basic x", "Bearer"])
def test_setting_both_fields_is_an_invalid_argument_even_when_the_header_is_malformed(
    authorization: str,
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        bearer_token(TOKEN, authorization)
    assert raised.value.violations == (
        FieldViolation("authorization", "set either token or authorization, not both"),
    )


# --- token matches no entry ---------------------------------------------------------------


def test_a_token_matching_no_entry_is_denied_with_reason_unknown_token() -> None:
    assert unauthenticated("unknown_token") == DENY_UNKNOWN_TOKEN


# --- revoked or expired -------------------------------------------------------------------


def test_revoked_entry_is_denied_with_reason_revoked() -> None:
    revoked = entry(CATALOG_READ, revoke_time=NOW - timedelta(seconds=1))
    assert check(revoked, "catalog", "catalog.entity.read", Action.READ) == unauthenticated(
        "revoked"
    )


def test_a_revoked_unrestricted_entry_is_denied_with_reason_revoked() -> None:
    revoked = entry(unrestricted=True, revoke_time=NOW)
    assert check(revoked, "catalog") == unauthenticated("revoked")


def test_a_revoked_entry_past_its_expiry_is_denied_as_revoked_not_expired() -> None:
    both = entry(
        CATALOG_READ, expire_time=NOW - timedelta(days=1), revoke_time=NOW - timedelta(days=2)
    )
    assert check(both, "catalog", "catalog.entity.read", Action.READ) == unauthenticated("revoked")
    assert both.state(NOW) == State.REVOKED


def test_an_entry_past_its_expire_time_is_denied_with_reason_expired() -> None:
    expired = entry(CATALOG_READ, expire_time=NOW - timedelta(seconds=1))
    assert check(expired, "catalog", "catalog.entity.read", Action.READ) == unauthenticated(
        "expired"
    )


def test_an_entry_is_expired_at_exactly_its_expire_time() -> None:
    expiring = entry(CATALOG_READ, expire_time=NOW)
    assert check(expiring, "catalog", "catalog.entity.read", Action.READ, now=NOW) == (
        unauthenticated("expired")
    )
    assert expiring.state(NOW) == State.EXPIRED


def test_an_entry_is_allowed_one_microsecond_before_its_expire_time() -> None:
    expiring = entry(CATALOG_READ, expire_time=NOW)
    just_before = NOW - timedelta(microseconds=1)
    assert check(expiring, "catalog", "catalog.entity.read", Action.READ, now=just_before) == ALLOW
    assert expiring.state(just_before) == State.ACTIVE


def test_an_expired_unrestricted_entry_is_denied_with_reason_expired() -> None:
    expired = entry(unrestricted=True, expire_time=NOW - timedelta(hours=1))
    assert check(expired, "catalog") == unauthenticated("expired")


def test_an_entry_without_expire_time_never_expires() -> None:
    forever = entry(CATALOG_READ)
    far_future = datetime(9999, 12, 31, tzinfo=UTC)
    assert check(forever, "catalog", "catalog.entity.read", Action.READ, now=far_future) == ALLOW


# --- unrestricted -------------------------------------------------------------------------


@pytest.mark.parametrize("plugin", ["catalog", "scaffolder", "events", "authz-tools"])
def test_an_unrestricted_entry_is_allowed_on_any_plugin_but_authz(plugin: str) -> None:
    assert check(entry(unrestricted=True), plugin) == ALLOW


@given(plugin=plugin_ids(), permission=st.text(max_size=40), action=ACTIONS)
def test_an_unrestricted_entry_is_allowed_any_permission_and_action_outside_authz(
    plugin: str, permission: str, action: Action | None
) -> None:
    assert check(entry(unrestricted=True), plugin, permission, action) == ALLOW


@pytest.mark.parametrize("permission", ["", *AdminPermission])
def test_unrestricted_never_covers_the_authz_plugin(permission: str) -> None:
    assert check(entry(unrestricted=True), "authz", permission, Action.READ) == forbidden(
        "plugin_not_allowed"
    )


def test_an_unrestricted_entry_with_an_authz_restriction_is_allowed_what_it_lists() -> None:
    admin = entry(Restriction("authz", (AdminPermission.READ,)), unrestricted=True)
    assert check(admin, "authz", AdminPermission.READ) == ALLOW
    assert check(admin, "authz", AdminPermission.REVOKE) == forbidden("permission_not_allowed")
    assert check(admin, "catalog", "catalog.entity.delete", Action.DELETE) == ALLOW


# --- plugin -------------------------------------------------------------------------------


def test_a_plugin_without_a_restriction_is_denied_with_reason_plugin_not_allowed() -> None:
    scoped = entry(CATALOG_READ, Restriction("events"))
    assert check(scoped, "scaffolder", "scaffolder.task.create", Action.CREATE) == forbidden(
        "plugin_not_allowed"
    )


def test_plugin_ids_are_matched_exactly() -> None:
    scoped = entry(Restriction("catalog"))
    assert check(scoped, "Catalog") == forbidden("plugin_not_allowed")
    assert check(scoped, "catalog-backend") == forbidden("plugin_not_allowed")
    assert check(scoped, "catalog") == ALLOW


def test_the_authz_plugin_is_allowed_only_through_its_restriction() -> None:
    admin = entry(Restriction("authz", tuple(AdminPermission)))
    for permission in AdminPermission:
        assert check(admin, "authz", permission) == ALLOW
    assert check(admin, "catalog") == forbidden("plugin_not_allowed")


@given(plugin=plugin_ids(), action=ACTIONS)
def test_any_plugin_an_entry_does_not_list_is_denied(plugin: str, action: Action | None) -> None:
    scoped = entry(Restriction("authz", tuple(AdminPermission)))
    assert check(scoped, plugin, "", action) == forbidden("plugin_not_allowed")


# --- permission ---------------------------------------------------------------------------


def test_a_permission_not_listed_is_denied_with_reason_permission_not_allowed() -> None:
    scoped = entry(Restriction("catalog", ("catalog.entity.read",)))
    assert check(scoped, "catalog", "catalog.entity.delete") == forbidden("permission_not_allowed")


def test_a_listed_permission_is_allowed() -> None:
    scoped = entry(Restriction("catalog", ("catalog.entity.read", "catalog.entity.create")))
    assert check(scoped, "catalog", "catalog.entity.create") == ALLOW


def test_a_request_without_permission_asks_for_plugin_level_access_and_is_allowed() -> None:
    scoped = entry(Restriction("catalog", ("catalog.entity.read",)))
    assert check(scoped, "catalog", "") == ALLOW


@given(permission=st.text(max_size=40))
def test_a_restriction_without_permissions_allows_any_permission(permission: str) -> None:
    assert check(entry(Restriction("catalog")), "catalog", permission) == ALLOW


def test_permissions_are_matched_exactly() -> None:
    scoped = entry(Restriction("catalog", ("catalog.entity.read",)))
    assert check(scoped, "catalog", "catalog.entity") == forbidden("permission_not_allowed")
    assert check(scoped, "catalog", "catalog.entity.read.all") == forbidden(
        "permission_not_allowed"
    )
    assert check(scoped, "catalog", "Catalog.Entity.Read") == forbidden("permission_not_allowed")


def test_a_permission_listed_under_another_plugin_is_not_allowed_here() -> None:
    scoped = entry(
        Restriction("catalog", ("catalog.entity.read",)),
        Restriction("scaffolder", ("scaffolder.task.read",)),
    )
    assert check(scoped, "scaffolder", "catalog.entity.read") == forbidden("permission_not_allowed")


# --- action -------------------------------------------------------------------------------


def test_a_missing_action_is_denied_when_the_restriction_lists_actions() -> None:
    scoped = entry(Restriction("catalog", (), (Action.READ,)))
    assert check(scoped, "catalog", "", None) == forbidden("action_not_allowed")


@pytest.mark.parametrize("action", [Action.CREATE, Action.UPDATE, Action.DELETE])
def test_an_action_not_listed_is_denied_with_reason_action_not_allowed(action: Action) -> None:
    scoped = entry(Restriction("catalog", (), (Action.READ,)))
    assert check(scoped, "catalog", "", action) == forbidden("action_not_allowed")


@pytest.mark.parametrize("action", [Action.READ, Action.UPDATE])
def test_a_listed_action_is_allowed(action: Action) -> None:
    scoped = entry(Restriction("catalog", (), (Action.READ, Action.UPDATE)))
    assert check(scoped, "catalog", "", action) == ALLOW


@given(action=ACTIONS)
def test_a_restriction_without_actions_allows_any_action_or_none(action: Action | None) -> None:
    assert check(entry(Restriction("catalog")), "catalog", "", action) == ALLOW


# --- permission AND action ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("permission", "action", "expected"),
    [
        ("catalog.entity.read", Action.READ, ALLOW),
        ("", Action.READ, ALLOW),
        ("catalog.entity.read", Action.DELETE, forbidden("action_not_allowed")),
        ("catalog.entity.read", None, forbidden("action_not_allowed")),
        ("", None, forbidden("action_not_allowed")),
        ("catalog.entity.delete", Action.READ, forbidden("permission_not_allowed")),
        ("catalog.entity.delete", Action.DELETE, forbidden("permission_not_allowed")),
        ("catalog.entity.delete", None, forbidden("permission_not_allowed")),
    ],
)
def test_permission_and_action_restrictions_combine_with_and(
    permission: str, action: Action | None, expected: Decision
) -> None:
    assert check(entry(CATALOG_READ), "catalog", permission, action) == expected


def test_each_plugin_is_judged_by_its_own_restriction() -> None:
    scoped = entry(
        CATALOG_READ,
        Restriction("scaffolder", ("scaffolder.task.create",), (Action.CREATE,)),
    )
    assert check(scoped, "scaffolder", "scaffolder.task.create", Action.CREATE) == ALLOW
    assert check(scoped, "scaffolder", "scaffolder.task.create", Action.READ) == forbidden(
        "action_not_allowed"
    )
    assert check(scoped, "catalog", "catalog.entity.read", Action.CREATE) == forbidden(
        "action_not_allowed"
    )


# --- allow --------------------------------------------------------------------------------


def test_allow_carries_the_entry_subject_and_id() -> None:
    decision = check(entry(CATALOG_READ), "catalog", "catalog.entity.read", Action.READ)
    assert decision.allowed
    assert (decision.code, decision.http_status, decision.reason) == (0, 200, "")
    assert (decision.subject, decision.entry_id) == (SUBJECT, ENTRY_ID)


def test_an_unrestricted_allow_carries_the_entry_subject_and_id() -> None:
    decision = check(entry(unrestricted=True), "events")
    assert (decision.allowed, decision.subject, decision.entry_id) == (True, SUBJECT, ENTRY_ID)


@pytest.mark.parametrize(
    ("scoped", "plugin"),
    [
        (entry(CATALOG_READ, revoke_time=NOW), "catalog"),
        (entry(CATALOG_READ, expire_time=NOW), "catalog"),
        (entry(CATALOG_READ), "events"),
        (entry(unrestricted=True), "authz"),
    ],
)
def test_a_deny_names_no_subject_and_no_entry(scoped: Entry, plugin: str) -> None:
    decision = check(scoped, plugin, "catalog.entity.read", Action.READ)
    assert not decision.allowed
    assert (decision.subject, decision.entry_id) == ("", "")


def test_a_policy_reflects_the_entry_it_was_compiled_from() -> None:
    scoped = entry(CATALOG_READ, Restriction("events"), expire_time=NOW)
    policy = Policy.of(scoped)
    assert policy.entry_id == ENTRY_ID
    assert policy.subject == SUBJECT
    assert not policy.revoked
    assert policy.expire_at == NOW.timestamp()
    assert dict(policy.scopes) == {
        "catalog": (frozenset({"catalog.entity.read"}), frozenset({Action.READ})),
        "events": (frozenset(), frozenset()),
    }
