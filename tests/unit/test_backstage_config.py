"""Reading a Backstage app-config's `backend.auth.externalAccess` and mapping it to entries,
with no I/O: substitutions, strings and lists, merging restrictions, the types that cannot be
imported, and unrestricted tokens."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz_admin._backstage_config import (
    CONFLICT,
    CREATE,
    NOT_IMPORTABLE,
    SKIPPED,
    Imported,
    WideningError,
    merge,
    plan_entries,
)
from authz_admin._failures import UsageError
from authz_client import ACTIONS, Restriction

TOKEN = "static-token-0123456789abcdef"


def app_config(*entries: Any, keys: list[Any] | None = None) -> dict[str, Any]:
    auth: dict[str, Any] = {"externalAccess": list(entries)}
    if keys is not None:
        auth["keys"] = keys
    return {"app": {"title": "Portal"}, "backend": {"baseUrl": "http://x", "auth": auth}}


def static(
    subject: str = "cicd", token: Any = TOKEN, restrictions: Any = None, **extra: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "static", "options": {"token": token, "subject": subject}}
    if restrictions is not None:
        entry["accessRestrictions"] = restrictions
    return entry | extra


def rule(plugin: str, permission: Any = None, action: Any = None) -> dict[str, Any]:
    """One Backstage access restriction, as app-config spells it."""
    restriction: dict[str, Any] = {"plugin": plugin}
    if permission is not None:
        restriction["permission"] = permission
    if action is not None:
        restriction["permissionAttribute"] = {"action": action}
    return restriction


def plan(
    *entries: Any,
    environ: Mapping[str, str] | None = None,
    files: Mapping[str, str] | None = None,
    allow_unrestricted: bool = False,
    keys: list[Any] | None = None,
) -> list[Imported]:
    def read_file(name: str) -> str:
        if files is None or name not in files:
            raise FileNotFoundError(2, "No such file or directory", name)
        return files[name]

    return plan_entries(
        app_config(*entries, keys=keys),
        environ or {},
        read_file,
        allow_unrestricted=allow_unrestricted,
    )


def one(*entries: Any, **kwargs: Any) -> Imported:
    [item] = plan(*entries, **kwargs)
    return item


def test_a_static_entry_maps_to_one_entry_with_its_subject_token_and_restrictions() -> None:
    item = one(
        static(
            "catalog-reader",
            restrictions=[
                {
                    "plugin": "catalog",
                    "permission": "catalog.entity.read",
                    "permissionAttribute": {"action": "read"},
                },
                {"plugin": "events"},
            ],
        )
    )
    assert (item.source, item.subject, item.status, item.reason) == (
        "externalAccess[0]",
        "catalog-reader",
        CREATE,
        "",
    )
    assert item.token == TOKEN
    assert item.restrictions == (
        Restriction("catalog", ("catalog.entity.read",), ("read",)),
        Restriction("events"),
    )
    assert item.unrestricted is False


@pytest.mark.parametrize(
    ("given_permission", "expected"),
    [
        ("catalog.entity.read", ("catalog.entity.read",)),
        (["entity.read", "location.read"], ("entity.read", "location.read")),
        ("entity.read location.read", ("entity.read", "location.read")),
        ("entity.read,location.read", ("entity.read", "location.read")),
        ("a.read b.read,, c.read", ("a.read", "b.read", "c.read")),
        (["a.read b.read", "c.read,a.read"], ("a.read", "b.read", "c.read")),
        (["a.read", "a.read"], ("a.read",)),
        ([], ()),  # an empty list is no restriction: any permission, as Backstage reads it
        (None, ()),
    ],
)  # fmt: skip
def test_a_permission_is_a_string_or_a_list_split_at_spaces_and_commas_each_once(
    given_permission: Any, expected: tuple[str, ...]
) -> None:
    restriction = {"plugin": "catalog", "permission": given_permission}
    assert one(static(restrictions=[restriction])).restrictions == (
        Restriction("catalog", expected),
    )


@pytest.mark.parametrize(
    ("given_action", "expected"),
    [
        ("read", ("read",)),
        (["create", "read"], ("create", "read")),
        ("read, update read", ("read", "update")),
        (["delete", "create"], ("create", "delete")),  # kept in the service's order
    ],
)
def test_an_action_is_a_string_or_a_list_too(given_action: Any, expected: tuple[str, ...]) -> None:
    restriction = {"plugin": "scaffolder", "permissionAttribute": {"action": given_action}}
    assert one(static(restrictions=[restriction])).restrictions == (
        Restriction("scaffolder", (), expected),
    )


@pytest.mark.parametrize(
    ("restriction", "reason"),
    [
        ({"plugin": "catalog", "permissionAttribute": {"action": "Read"}}, "'Read' is not one of"),
        ({"plugin": "catalog", "permissionAttribute": {"action": "execute"}}, "'execute'"),
        ({"plugin": "catalog", "permissionAttribute": {"verb": "read"}}, "with action"),
        ({"plugin": "catalog", "permissions": "a.read"}, "accessRestrictions[0].permissions"),
        ({"plugin": "catalog", "permission": ""}, "accessRestrictions[0].permission: must be"),
        ({"plugin": "catalog", "permission": [7]}, "accessRestrictions[0].permission[0]"),
        ({"permission": "a.read"}, "accessRestrictions[0].plugin: is missing"),
        ({"plugin": 7}, "accessRestrictions[0].plugin: must be a string, not int"),
        ({"plugin": "Catalog!"}, "plugin 'Catalog!': must be lowercase"),
        ({"plugin": "catalog", "permission": "bad!name"}, "permission 'bad!name'"),
        ("catalog", "accessRestrictions[0]: must be a mapping"),
    ],
)
def test_a_restriction_backstage_or_this_service_would_refuse_skips_the_entry_naming_it(
    restriction: Any, reason: str
) -> None:
    item = one(static(restrictions=[restriction]))
    assert item.status == SKIPPED
    assert reason in item.reason
    assert item.restrictions == ()


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("${CICD_TOKEN}", {"CICD_TOKEN": TOKEN}, TOKEN),
        ("${ CICD_TOKEN }", {"CICD_TOKEN": TOKEN}, TOKEN),
        ("prefix-${A}-${B}", {"A": "one", "B": "two2"}, "prefix-one-two2"),
        ("literal-$${NOT_A_VARIABLE}", {}, "literal-${NOT_A_VARIABLE}"),
        ("x-$$${A}-y0123", {"A": "unused"}, "x-$${A}-y0123"),
        ("no-dollar-signs-at-all", {}, "no-dollar-signs-at-all"),
        ("a-lone-$-sign-is-kept", {}, "a-lone-$-sign-is-kept"),
    ],
)
def test_variables_are_substituted_from_the_environment_as_backstage_does(
    text: str, environ: dict[str, str], expected: str
) -> None:
    assert one(static(token=text, restrictions=[{"plugin": "events"}]), environ=environ).token == (
        expected
    )


def test_an_unset_variable_skips_the_entry_naming_the_variable_never_an_empty_token() -> None:
    item = one(static(token="${CICD_TOKEN}", restrictions=[{"plugin": "events"}]))
    assert item.status == SKIPPED
    assert item.subject == "cicd"
    assert item.reason.startswith("options.token: the environment variable CICD_TOKEN is not set")
    assert item.token == ""
    empty = one(static(token="${}", restrictions=[{"plugin": "events"}]))
    assert (empty.status, empty.reason.split(" (")[0]) == (SKIPPED, "options.token: ${} is empty")


def test_an_unset_variable_in_a_permission_refuses_the_entry_rather_than_allowing_any() -> None:
    # Backstage drops a value whose variable is unset: a dropped permission means any.
    restriction = {"plugin": "catalog", "permission": "${CATALOG_PERMISSIONS}"}
    item = one(static(restrictions=[restriction]))
    assert item.status == SKIPPED
    assert "CATALOG_PERMISSIONS is not set" in item.reason
    assert item.reason.startswith("accessRestrictions[0].permission:")
    set_ = one(static(restrictions=[restriction]), environ={"CATALOG_PERMISSIONS": "a.read b.read"})
    assert set_.restrictions == (Restriction("catalog", ("a.read", "b.read")),)


def test_env_and_file_includes_give_a_token_as_backstage_reads_them() -> None:
    from_env = one(
        static(token={"$env": "CICD_TOKEN"}, restrictions=[{"plugin": "events"}]),
        environ={"CICD_TOKEN": TOKEN},
    )
    assert (from_env.status, from_env.token) == (CREATE, TOKEN)
    from_file = one(
        static(token={"$file": "secrets/cicd-token"}, restrictions=[{"plugin": "events"}]),
        files={"secrets/cicd-token": TOKEN + "\n"},
    )
    assert (from_file.status, from_file.token) == (CREATE, TOKEN)  # trailing newline trimmed
    missing = one(static(token={"$file": "secrets/gone"}, restrictions=[{"plugin": "events"}]))
    assert missing.status == SKIPPED
    assert missing.reason == (
        "options.token.$file: cannot read secrets/gone: No such file or directory"
    )
    unset = one(static(token={"$env": "UNSET_TOKEN"}, restrictions=[{"plugin": "events"}]))
    assert "UNSET_TOKEN is not set" in unset.reason
    included = one(static(token={"$include": "other.yaml#x"}, restrictions=[{"plugin": "events"}]))
    assert (included.status, "$include is not followed" in included.reason) == (SKIPPED, True)


def test_legacy_jwks_other_types_and_legacy_keys_are_not_importable_and_each_is_listed() -> None:
    items = plan(
        {"type": "legacy", "options": {"secret": "${LEGACY_SECRET}", "subject": "legacy-catalog"}},
        {"type": "jwks", "options": {"url": "https://x/jwks.json", "subjectPrefix": "ci"}},
        {"type": "custom-oidc", "options": {}},
        static(restrictions=[{"plugin": "events"}]),
        keys=[{"secret": "c2VjcmV0"}, {"secret": "b3RoZXI="}],
    )
    assert [(i.source, i.subject, i.status) for i in items] == [
        ("externalAccess[0]", "legacy-catalog", NOT_IMPORTABLE),
        ("externalAccess[1]", "ci", NOT_IMPORTABLE),
        ("externalAccess[2]", "-", NOT_IMPORTABLE),
        ("externalAccess[3]", "cicd", CREATE),
        ("keys[0]", "-", NOT_IMPORTABLE),
        ("keys[1]", "-", NOT_IMPORTABLE),
    ]
    assert "legacy tokens are JWTs" in items[0].reason  # its unset variable does not matter
    assert "jwks tokens are JWTs" in items[1].reason
    assert "type 'custom-oidc'" in items[2].reason
    assert all(i.token == "" for i in items if i.status == NOT_IMPORTABLE)


def test_a_token_without_restrictions_is_skipped_unless_allow_unrestricted_is_given() -> None:
    for entry in (static(), static(restrictions=[])):
        skipped = one(entry)
        assert skipped.status == SKIPPED
        assert "reaches every plugin" in skipped.reason
        assert "--allow-unrestricted" in skipped.reason
        allowed = one(entry, allow_unrestricted=True)
        assert (allowed.status, allowed.unrestricted, allowed.restrictions) == (CREATE, True, ())
    restricted = one(static(restrictions=[{"plugin": "events"}]), allow_unrestricted=True)
    assert restricted.unrestricted is False


@pytest.mark.parametrize(
    ("subject", "token", "reason"),
    [
        ("søren-local-dev", TOKEN, "options.subject: 'søren-local-dev' must be 1-128 printable"),
        ("x" * 129, TOKEN, "options.subject: 'xxx"),
        ("cicd", "short", "options.token: must be at least 8 characters"),
        ("cicd", "x" * 513, "options.token: must be at most 512 bytes"),
        ("cicd", 12345678, "options.token: must be a string, not int"),
        ("cicd", None, "options.token: is missing"),
        (None, TOKEN, "options.subject: is missing"),
    ],
)
def test_subjects_and_tokens_must_pass_this_services_rules_too(
    subject: Any, token: Any, reason: str
) -> None:
    item = one(static(subject, token, [{"plugin": "events"}]))
    assert item.status == SKIPPED
    assert reason in item.reason
    if isinstance(token, str):
        assert token not in item.reason


def test_a_restriction_for_the_plugin_authz_is_a_conflict_never_an_admin_grant() -> None:
    item = one(static(restrictions=[{"plugin": "events"}, {"plugin": "authz"}]))
    assert item.status == CONFLICT
    assert "plugin 'authz' is this service's own admin plugin" in item.reason


def test_restrictions_of_one_plugin_merge_when_one_restriction_keeps_the_meaning() -> None:
    item = one(
        static(
            restrictions=[
                rule("catalog", "a.read", "read"),
                rule("events"),
                rule("catalog", "b.read", "read"),
            ]
        )
    )
    assert item.status == CREATE
    assert item.restrictions == (
        Restriction("catalog", ("a.read", "b.read"), ("read",)),
        Restriction("events"),
    )
    assert item.reason == "the 2 restrictions of catalog merged exactly"


def test_restrictions_of_one_plugin_that_would_widen_as_one_are_a_conflict_saying_why() -> None:
    item = one(
        static(
            restrictions=[
                rule("catalog", "a.read", "read"),
                rule("catalog", "b.delete", "delete"),
            ]
        )
    )
    assert item.status == CONFLICT
    assert item.restrictions == ()
    assert "cannot be one without also allowing permission 'a.read' with action 'delete'" in (
        item.reason
    )


@pytest.mark.parametrize(
    ("group", "merged"),
    [
        # The same permissions: the actions add up.
        ([Restriction("c", ("a",), ("read",)), Restriction("c", ("a",), ("update",))],
         Restriction("c", ("a",), ("read", "update"))),
        # The same actions: the permissions add up.
        ([Restriction("c", ("a",), ("read",)), Restriction("c", ("b",), ("read",))],
         Restriction("c", ("a", "b"), ("read",))),
        # One holds the other.
        ([Restriction("c", ("a",), ("read",)), Restriction("c", ("a", "b"), ("read", "delete"))],
         Restriction("c", ("a", "b"), ("read", "delete"))),
        ([Restriction("c", ("a",), ("read",)), Restriction("c")], Restriction("c")),
        ([Restriction("c", ("a",)), Restriction("c", ("a",), ("read",))], Restriction("c", ("a",))),
        # Any action stays any: a request naming no action is allowed by one of them.
        ([Restriction("c", ("a",)), Restriction("c", ("b",))], Restriction("c", ("a", "b"))),
        # Covered only all together: no two of them merge alone.
        ([Restriction("c", ("a", "b"), ("read",)), Restriction("c", ("a",), ("read", "delete")),
          Restriction("c", ("b",), ("delete",))],
         Restriction("c", ("a", "b"), ("read", "delete"))),
    ],
)  # fmt: skip
def test_merge_gives_the_one_restriction_that_allows_exactly_what_any_of_them_allows(
    group: list[Restriction], merged: Restriction
) -> None:
    assert merge(group) == merged


@pytest.mark.parametrize(
    ("group", "witness"),
    [
        ([Restriction("c", ("a",), ("read",)), Restriction("c", ("b",), ("delete",))],
         "permission 'a' with action 'delete'"),
        # Any permission with read, or a with any action: one would allow b with delete.
        ([Restriction("c", (), ("read",)), Restriction("c", ("a",))],
         "a permission with action 'create'"),
        ([Restriction("c", ("a",), ("read",)), Restriction("c", ("b",))],
         "permission 'a' with action 'create'"),
    ],
)  # fmt: skip
def test_merge_refuses_restrictions_one_restriction_would_widen_naming_a_request(
    group: list[Restriction], witness: str
) -> None:
    with pytest.raises(WideningError, match=witness):
        merge(group)


# Backstage's decision for a token's restrictions: a request passes when ANY of them allows
# it; each one combines its permissions and actions with AND, and lists of actions need an
# action (backend-defaults' access-restriction checks).
OTHER_PERMISSION = "z.not.listed"
NAMES = ("a.read", "b.write", "c.run")
REQUESTS = list(itertools.product((*NAMES, OTHER_PERMISSION, None), (*ACTIONS, None)))


def allows(r: Restriction, permission: str | None, action: str | None) -> bool:
    permitted = not r.permissions or permission is None or permission in r.permissions
    acted = not r.actions or (action is not None and action in r.actions)
    return permitted and acted


def backstage_allows(
    group: Sequence[Restriction], permission: str | None, action: str | None
) -> bool:
    return any(allows(r, permission, action) for r in group)


def every_restriction() -> list[Restriction]:
    subsets = [
        combination
        for n in range(len(ACTIONS) + 1)
        for combination in itertools.combinations(ACTIONS, n)
    ]
    permission_sets = [
        combination
        for n in range(len(NAMES) + 1)
        for combination in itertools.combinations(NAMES, n)
    ]
    return [Restriction("c", p, a) for p in permission_sets for a in subsets]


restrictions = st.builds(
    Restriction,
    st.just("c"),
    st.lists(st.sampled_from(NAMES), unique=True, max_size=3).map(tuple),
    st.lists(st.sampled_from(ACTIONS), unique=True, max_size=4).map(
        lambda actions: tuple(a for a in ACTIONS if a in actions)
    ),
)


@given(st.lists(restrictions, min_size=1, max_size=4))
def test_merge_succeeds_exactly_when_one_restriction_can_mean_the_same(
    group: list[Restriction],
) -> None:
    meaning = [backstage_allows(group, p, a) for p, a in REQUESTS]
    exact = [r for r in every_restriction() if [allows(r, p, a) for p, a in REQUESTS] == meaning]
    try:
        merged = merge(group)
    except WideningError:
        assert exact == []
    else:
        assert [allows(merged, p, a) for p, a in REQUESTS] == meaning
        assert exact != []


def test_a_token_given_twice_is_a_conflict_for_every_copy() -> None:
    items = plan(
        static("first", restrictions=[{"plugin": "events"}]),
        static("second", restrictions=[{"plugin": "catalog"}]),
        static("third", token="another-token-0123456789", restrictions=[{"plugin": "events"}]),
    )
    assert [(i.subject, i.status) for i in items] == [
        ("first", CONFLICT),
        ("second", CONFLICT),
        ("third", CREATE),
    ]
    assert items[0].reason == "the same token as externalAccess[1]: give each its own"
    assert all(TOKEN not in i.reason for i in items)


def test_a_subject_given_twice_goes_to_the_first_and_the_others_conflict() -> None:
    # Backstage allows two tokens with one subject; here a subject names one entry.
    items = plan(
        static("cicd", token="first-token-0123456789", restrictions=[{"plugin": "events"}]),
        static("cicd", token="second-token-0123456789", restrictions=[{"plugin": "events"}]),
    )
    assert [i.status for i in items] == [CREATE, CONFLICT]
    assert items[1].reason.startswith("the subject of externalAccess[0] too")


@pytest.mark.parametrize(
    "config",
    [
        None,
        {"backend": {"baseUrl": "http://x"}},
        {"backend": {"auth": {"dangerouslyDisableDefaultAuthPolicy": True}}},
        {"backend": "not a mapping"},
        ["backend"],
    ],
)
def test_an_app_config_without_external_access_is_a_usage_error(config: Any) -> None:
    with pytest.raises(UsageError, match=r"has no backend\.auth\.externalAccess"):
        plan_entries(config, {}, lambda name: "", allow_unrestricted=False)


def test_external_access_that_is_not_a_list_is_a_usage_error() -> None:
    config = {"backend": {"auth": {"externalAccess": {"type": "static"}}}}
    with pytest.raises(UsageError, match="must be lists"):
        plan_entries(config, {}, lambda name: "", allow_unrestricted=False)


def test_an_entry_that_is_not_a_mapping_or_lacks_options_is_skipped() -> None:
    items = plan("static", {"type": "static"}, {"options": {}})
    assert [(i.status, i.reason) for i in items] == [
        (SKIPPED, "must be a mapping with type and options"),
        (SKIPPED, "options: must be a mapping with token and subject"),
        (SKIPPED, "type: is missing"),
    ]


def test_the_token_is_in_no_repr_and_no_json_of_a_planned_entry() -> None:
    item = one(static(restrictions=[{"plugin": "events"}]))
    assert item.token == TOKEN
    assert TOKEN not in repr(item)
    as_json = item.to_dict(dry_run=True)
    assert TOKEN not in str(as_json)
    assert as_json == {
        "source": "externalAccess[0]",
        "subject": "cicd",
        "plan": CREATE,
        "result": None,
        "reason": "",
        "unrestricted": False,
        "access_restrictions": [{"plugin": "events", "permissions": [], "actions": []}],
        "entry_id": None,
    }
