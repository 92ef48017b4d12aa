"""The rules request fields follow (DESIGN section 2 and the syntax in `core/rules.py`).

Messages must never repeat the value they judge: the value may be a token. The property tests
prove it by planting a non-ASCII marker in every rejected value; the messages themselves are
plain ASCII, so the marker could only reach one by echoing the value.
"""

from __future__ import annotations

import string
import sys
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz_service.core.errors import FieldViolation, InvalidArgument
from authz_service.core.model import Action, AdminPermission, Restriction
from authz_service.core.rules import (
    DESCRIPTION_MAX_CHARS,
    MAX_PERMISSIONS,
    MAX_RESTRICTIONS,
    REVOKE_REASON_MAX_CHARS,
    RestrictionInput,
    Violations,
    action_problem,
    parse_scope,
    permission_problem,
    plugin_problem,
    subject_problem,
    text_problem,
    token_problem,
)

# Every code point with the Unicode White_Space property, plus the ASCII information
# separators that Python's str.isspace also counts as whitespace.
UNICODE_WHITESPACE = (
    "\t\n\v\f\r \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
    "\x1c\x1d\x1e\x1f"
)

# What a token may be made of: printable, not whitespace (letters, marks, numbers,
# punctuation, symbols, in any script).
TOKEN_CHARS = st.characters(categories=("L", "M", "N", "P", "S"))
PRINTABLE_ASCII_NO_SPACE = "".join(chr(c) for c in range(0x21, 0x7F))
WHITESPACE_CHARS = st.sampled_from(UNICODE_WHITESPACE)
# Controls, format characters, surrogates and private use; the controls that Python counts
# as whitespace (\t, \x1c-\x1f, ...) are whitespace's business.
NON_PRINTABLE_CHARS = st.characters(categories=("Cc", "Cf", "Co", "Cs")).filter(
    lambda c: not c.isspace()
)
# A character no message contains (messages are ASCII), planted to catch an echoed value.
MARKERS = st.characters(min_codepoint=0x80, exclude_categories=("Cs",))
LOWER_ALNUM = string.ascii_lowercase + string.digits
ALNUM = string.ascii_letters + string.digits


def insert(value: str, char: str, position: int) -> str:
    """`value` with `char` inserted at `position` (clamped to the value's length)."""
    at = position % (len(value) + 1)
    return value[:at] + char + value[at:]


@st.composite
def with_inserted(draw: st.DrawFn, values: st.SearchStrategy[str], chars: st.SearchStrategy[str]):
    """A value from `values` with one character from `chars` inserted anywhere."""
    return insert(draw(values), draw(chars), draw(st.integers(min_value=0)))


@st.composite
def marked(draw: st.DrawFn) -> str:
    """Any text that carries at least one non-ASCII marker character."""
    return insert(draw(st.text()), draw(MARKERS), draw(st.integers(min_value=0)))


@st.composite
def plugin_ids(draw: st.DrawFn) -> str:
    """Valid plugin ids: a lowercase word starting with a letter, more joined by - or _."""
    first = draw(st.sampled_from(string.ascii_lowercase)) + draw(st.text(LOWER_ALNUM, max_size=8))
    rest = draw(
        st.lists(
            st.tuples(st.sampled_from("-_"), st.text(LOWER_ALNUM, min_size=1, max_size=8)),
            max_size=4,
        )
    )
    return first + "".join(sep + word for sep, word in rest)


@st.composite
def permission_words(draw: st.DrawFn) -> str:
    """One dot-segment of a permission: a word of letters and digits, joined by - or _."""
    first = draw(st.sampled_from(string.ascii_letters)) + draw(st.text(ALNUM, max_size=6))
    rest = draw(
        st.lists(
            st.tuples(st.sampled_from("-_"), st.text(ALNUM, min_size=1, max_size=6)),
            max_size=2,
        )
    )
    return first + "".join(sep + word for sep, word in rest)


PERMISSIONS = st.lists(permission_words(), min_size=1, max_size=5).map(".".join)


def scope_fields(
    raws: list[RestrictionInput], *, unrestricted: bool = False
) -> list[FieldViolation]:
    """The violations parse_scope records for `raws`."""
    found = Violations()
    parse_scope(raws, unrestricted, found)
    return list(found.found)


# --- token --------------------------------------------------------------------------------


def test_a_token_of_eight_characters_is_accepted() -> None:
    assert token_problem("abcdefgh") is None


def test_a_token_of_seven_characters_is_refused() -> None:
    assert token_problem("abcdefg") == "must be at least 8 characters"


def test_an_empty_token_is_refused_as_required() -> None:
    assert token_problem("") == "is required"


def test_a_token_from_the_admin_generator_is_accepted() -> None:
    # 24 random bytes in base64: 32 characters drawn from letters, digits, '+', '/'.
    assert token_problem("q83vEjRWeJAAESIzRFVmd3iZqrvM3e7/") is None
    assert token_problem("AAECAwQFBgcICQoLDA0ODxAREhMUFRYX+/==") is None


def test_the_minimum_length_counts_characters_not_bytes() -> None:
    assert token_problem("\u00e9" * 7) == "must be at least 8 characters"  # 14 bytes
    assert token_problem("\u00e9" * 8) is None


def test_an_ascii_token_of_exactly_512_bytes_is_accepted() -> None:
    assert token_problem("a" * 512) is None


def test_an_ascii_token_of_513_bytes_is_refused() -> None:
    assert token_problem("a" * 513) == "must be at most 512 bytes"


@pytest.mark.parametrize(
    "token",
    [
        "\u00e9" * 256,  # 2-byte characters: 512 bytes
        "\u20ac" * 170 + "ab",  # 3-byte characters: 510 + 2 bytes
        "\U0001f600" * 128,  # 4-byte characters: 512 bytes
        "\U0001f600" * 127 + "\u20ac" + "a",  # 508 + 3 + 1 bytes
    ],
)
def test_a_multibyte_token_of_exactly_512_utf8_bytes_is_accepted(token: str) -> None:
    assert len(token.encode("utf-8")) == 512
    assert token_problem(token) is None


@pytest.mark.parametrize(
    "token",
    [
        "\u00e9" * 256 + "a",  # 513 bytes in 257 characters
        "\u20ac" * 171,  # 513 bytes in 171 characters
        "\U0001f600" * 128 + "a",  # 513 bytes in 129 characters
        "\U0001f600" * 127 + "\u20ac" * 2,  # 514 bytes: the last character straddles 512
    ],
)
def test_a_multibyte_token_over_512_utf8_bytes_is_refused_although_it_has_few_characters(
    token: str,
) -> None:
    assert len(token) < 512
    assert len(token.encode("utf-8")) > 512
    assert token_problem(token) == "must be at most 512 bytes"


@pytest.mark.parametrize("space", list(UNICODE_WHITESPACE), ids=lambda c: f"U+{ord(c):04X}")
def test_a_token_containing_any_unicode_whitespace_is_refused(space: str) -> None:
    assert token_problem(f"abcd{space}efgh") == "must not contain whitespace"
    assert token_problem(f"{space}abcdefgh") == "must not contain whitespace"
    assert token_problem(f"abcdefgh{space}") == "must not contain whitespace"


def test_every_whitespace_or_separator_code_point_is_refused_in_a_token() -> None:
    spaces = [
        chr(c)
        for c in range(sys.maxunicode + 1)
        if chr(c).isspace() or unicodedata.category(chr(c)) in {"Zs", "Zl", "Zp"}
    ]
    assert set(UNICODE_WHITESPACE) <= set(spaces)
    accepted = [f"U+{ord(c):04X}" for c in spaces if token_problem(f"abcd{c}efgh") is None]
    assert accepted == []


@pytest.mark.parametrize(
    "invisible",
    ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u180e", "\u00ad"],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_a_token_containing_an_invisible_format_character_is_refused(invisible: str) -> None:
    assert token_problem(f"abcd{invisible}efgh") == "must contain only printable characters"


def test_a_token_containing_nul_is_refused() -> None:
    assert token_problem("abcd\x00efgh") == "must contain only printable characters"


@pytest.mark.parametrize(
    "control", ["\x01", "\x07", "\x1b", "\x7f", "\x9b", "\ud800", "\ue000"], ids=repr
)
def test_a_token_containing_a_control_surrogate_or_private_character_is_refused(
    control: str,
) -> None:
    assert token_problem(f"abcd{control}efgh") == "must contain only printable characters"


def test_a_token_of_printable_non_ascii_characters_is_accepted() -> None:
    assert token_problem("p\u00e4ssw\u00f6rd-\u6f22\u5b57-\u0416") is None


@given(st.text(TOKEN_CHARS, min_size=8, max_size=128))
def test_any_printable_token_without_whitespace_within_bounds_is_accepted(token: str) -> None:
    # 128 characters of at most 4 bytes each stay within 512 bytes.
    assert token_problem(token) is None


@given(st.text(PRINTABLE_ASCII_NO_SPACE, min_size=8, max_size=512))
def test_any_printable_ascii_token_of_8_to_512_characters_is_accepted(token: str) -> None:
    assert token_problem(token) is None


@given(st.text(TOKEN_CHARS, max_size=7))
def test_any_token_shorter_than_eight_characters_is_refused(token: str) -> None:
    assert token_problem(token) is not None


@given(
    st.text(TOKEN_CHARS, min_size=8, max_size=200).map(
        lambda t: t + "x" * max(0, 513 - len(t.encode("utf-8")))
    )
)
def test_any_token_over_512_utf8_bytes_is_refused(token: str) -> None:
    assert len(token.encode("utf-8")) > 512
    assert token_problem(token) == "must be at most 512 bytes"


@given(with_inserted(st.text(TOKEN_CHARS, min_size=8, max_size=120), WHITESPACE_CHARS))
def test_any_token_containing_a_whitespace_character_is_refused(token: str) -> None:
    assert token_problem(token) == "must not contain whitespace"


@given(with_inserted(st.text(TOKEN_CHARS, min_size=8, max_size=120), NON_PRINTABLE_CHARS))
def test_any_token_containing_a_non_printable_character_is_refused(token: str) -> None:
    assert token_problem(token) == "must contain only printable characters"


@given(
    st.one_of(
        marked(),
        with_inserted(marked(), WHITESPACE_CHARS),
        with_inserted(marked(), NON_PRINTABLE_CHARS),
        marked().map(lambda t: t * 300),
    )
)
def test_a_token_problem_never_repeats_the_token(token: str) -> None:
    problem = token_problem(token)
    if problem is not None:
        assert token not in problem


@given(st.text())
def test_a_token_problem_is_one_of_a_few_fixed_messages_whatever_the_token(token: str) -> None:
    assert token_problem(token) in {
        None,
        "is required",
        "must be at least 8 characters",
        "must be at most 512 bytes",
        "must not contain whitespace",
        "must contain only printable characters",
    }


# --- subject ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    ["ci-deploy", "bootstrap-admin", "a", "x" * 128, PRINTABLE_ASCII_NO_SPACE, "team:svc/v2"],
)
def test_a_printable_ascii_subject_without_whitespace_is_accepted(subject: str) -> None:
    assert subject_problem(subject) is None


def test_an_empty_subject_is_refused_as_required() -> None:
    assert subject_problem("") == "is required"


def test_a_subject_of_129_characters_is_refused() -> None:
    assert subject_problem("x" * 129) == "must be at most 128 characters"


@pytest.mark.parametrize(
    "subject",
    [
        "ci deploy",
        "ci\tdeploy",
        "ci-deploy\n",
        "ci\u00a0deploy",
        "d\u00e9ploiement",
        "ci\x00deploy",
        "ci\x7fdeploy",
        "ci\u200bdeploy",
    ],
    ids=repr,
)
def test_a_subject_with_whitespace_control_or_non_ascii_characters_is_refused(
    subject: str,
) -> None:
    assert subject_problem(subject) == "must be printable ASCII without whitespace"


@given(st.text(PRINTABLE_ASCII_NO_SPACE, min_size=1, max_size=128))
def test_any_printable_ascii_subject_of_1_to_128_characters_is_accepted(subject: str) -> None:
    assert subject_problem(subject) is None


@given(with_inserted(st.text(PRINTABLE_ASCII_NO_SPACE, max_size=100), WHITESPACE_CHARS))
def test_any_subject_containing_a_whitespace_character_is_refused(subject: str) -> None:
    assert subject_problem(subject) is not None


@given(with_inserted(st.text(PRINTABLE_ASCII_NO_SPACE, max_size=100), MARKERS))
def test_any_subject_containing_a_non_ascii_character_is_refused(subject: str) -> None:
    assert subject_problem(subject) is not None


@given(st.text(PRINTABLE_ASCII_NO_SPACE, min_size=129, max_size=300))
def test_any_subject_longer_than_128_characters_is_refused(subject: str) -> None:
    assert subject_problem(subject) == "must be at most 128 characters"


@given(st.one_of(marked(), marked().map(lambda s: s * 200)))
def test_a_subject_problem_never_repeats_the_subject(subject: str) -> None:
    problem = subject_problem(subject)
    assert problem is not None
    assert subject not in problem


# --- plugin -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plugin",
    [
        "catalog",
        "scaffolder",
        "events",
        "tech-insights",
        "kubernetes_proxy",
        "app2",
        "authz",
        "a",
        "a" * 64,
        "a-1_b2",
    ],
)
def test_a_lowercase_plugin_id_is_accepted(plugin: str) -> None:
    assert plugin_problem(plugin) is None


def test_an_empty_plugin_is_refused_as_required() -> None:
    assert plugin_problem("") == "is required"


def test_a_plugin_of_65_characters_is_refused() -> None:
    assert plugin_problem("a" * 65) == "must be at most 64 characters"


@pytest.mark.parametrize(
    "plugin",
    [
        "Catalog",
        "CATALOG",
        "2fa",
        "-catalog",
        "_catalog",
        "catalog-",
        "tech--insights",
        "tech-_insights",
        "tech insights",
        "catalog.entity",
        "k\u00e4talog",
        "catalog\n",
        "cat/alog",
    ],
    ids=repr,
)
def test_a_plugin_id_outside_the_syntax_is_refused(plugin: str) -> None:
    problem = plugin_problem(plugin)
    assert problem is not None
    assert problem.startswith("must be lowercase letters and digits")


@given(plugin_ids().filter(lambda p: len(p) <= 64))
def test_any_lowercase_plugin_id_of_joined_words_is_accepted(plugin: str) -> None:
    assert plugin_problem(plugin) is None


@given(with_inserted(plugin_ids(), WHITESPACE_CHARS))
def test_any_plugin_id_containing_whitespace_is_refused(plugin: str) -> None:
    assert plugin_problem(plugin) is not None


@given(with_inserted(plugin_ids(), st.sampled_from(string.ascii_uppercase)))
def test_any_plugin_id_containing_an_uppercase_letter_is_refused(plugin: str) -> None:
    assert plugin_problem(plugin) is not None


@given(plugin_ids(), st.sampled_from(string.digits))
def test_any_plugin_id_starting_with_a_digit_is_refused(plugin: str, digit: str) -> None:
    assert plugin_problem(digit + plugin[1:]) is not None


@given(plugin_ids().map(lambda p: (p + "-") * 33))
def test_any_plugin_id_longer_than_64_characters_is_refused(plugin: str) -> None:
    assert plugin_problem(plugin) is not None


@given(st.one_of(marked(), marked().map(lambda p: p * 100)))
def test_a_plugin_problem_never_repeats_the_plugin(plugin: str) -> None:
    problem = plugin_problem(plugin)
    assert problem is not None
    assert plugin not in problem


# --- permission ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "permission",
    [
        "catalog.entity.read",
        "catalog.entity.create",
        "scaffolder.template.parameter.read",
        "kubernetes.proxy",
        "tech-insights.fact_schema.read",
        "catalogEntityRead",
        "authz.entry.read",
        "x" * 128,
    ],
)
def test_a_dot_separated_permission_name_is_accepted(permission: str) -> None:
    assert permission_problem(permission) is None


def test_an_empty_permission_is_refused() -> None:
    assert permission_problem("") == "must not be empty"


def test_a_permission_of_129_characters_is_refused() -> None:
    assert permission_problem("x" * 129) == "must be at most 128 characters"


@pytest.mark.parametrize(
    "permission",
    [
        "catalog..read",
        ".catalog.read",
        "catalog.read.",
        "catalog entity.read",
        "catalog.entity.read\n",
        "catalog.entity.r\u00e9ad",
        "catalog/entity/read",
        "catalog.entity.read*",
        "catalog.-entity",
        "catalog.entity-",
    ],
    ids=repr,
)
def test_a_permission_outside_the_syntax_is_refused(permission: str) -> None:
    problem = permission_problem(permission)
    assert problem is not None
    assert problem.startswith("must be dot-separated words")


@given(PERMISSIONS.filter(lambda p: len(p) <= 128))
def test_any_permission_of_dot_separated_words_is_accepted(permission: str) -> None:
    assert permission_problem(permission) is None


@given(with_inserted(PERMISSIONS, WHITESPACE_CHARS))
def test_any_permission_containing_whitespace_is_refused(permission: str) -> None:
    assert permission_problem(permission) is not None


@given(PERMISSIONS, PERMISSIONS)
def test_any_permission_with_an_empty_dot_segment_is_refused(left: str, right: str) -> None:
    assert permission_problem(f"{left}..{right}") is not None
    assert permission_problem(f".{left}") is not None
    assert permission_problem(f"{left}.") is not None


@given(PERMISSIONS.map(lambda p: (p + ".") * 64 + "x"))
def test_any_permission_longer_than_128_characters_is_refused(permission: str) -> None:
    assert permission_problem(permission) is not None


@given(st.one_of(marked(), marked().map(lambda p: p * 200)))
def test_a_permission_problem_never_repeats_the_permission(permission: str) -> None:
    problem = permission_problem(permission)
    assert problem is not None
    assert permission not in problem


# --- description and revoke reason --------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", "Deploys from CI", "Owned by team-platform \u2014 ask in #platform \U0001f680"]
)
def test_a_printable_description_is_accepted(text: str) -> None:
    assert text_problem(text, DESCRIPTION_MAX_CHARS) is None


def test_a_description_of_1024_characters_is_accepted_and_1025_refused() -> None:
    assert text_problem("d" * 1024, DESCRIPTION_MAX_CHARS) is None
    assert text_problem("d" * 1025, DESCRIPTION_MAX_CHARS) == "must be at most 1024 characters"


def test_a_revoke_reason_of_512_characters_is_accepted_and_513_refused() -> None:
    assert text_problem("r" * 512, REVOKE_REASON_MAX_CHARS) is None
    assert text_problem("r" * 513, REVOKE_REASON_MAX_CHARS) == "must be at most 512 characters"


@pytest.mark.parametrize(
    "text",
    ["line one\nline two", "tab\there", "nul\x00", "bell\x07", "para\u2029graph", "zw\u200bsp"],
    ids=repr,
)
def test_a_description_with_newlines_or_control_characters_is_refused(text: str) -> None:
    problem = text_problem(text, DESCRIPTION_MAX_CHARS)
    assert problem is not None
    assert problem.startswith("must contain only printable characters")
    assert text_problem(text, REVOKE_REASON_MAX_CHARS) == problem


@given(st.one_of(marked().map(lambda t: t + "\n"), marked().map(lambda t: t * 1100)))
def test_a_text_problem_never_repeats_the_text(text: str) -> None:
    problem = text_problem(text, DESCRIPTION_MAX_CHARS)
    assert problem is not None
    assert text not in problem


# --- actions ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 2, 3, 4, *Action])
def test_the_four_action_numbers_are_accepted(value: int) -> None:
    assert action_problem(value) is None


@pytest.mark.parametrize("value", [0, 5, 6, -1, 2**31 - 1])
def test_action_unspecified_and_numbers_past_delete_are_refused(value: int) -> None:
    assert action_problem(value) == "must be one of CREATE, READ, UPDATE, DELETE"


@given(st.integers().filter(lambda n: not 1 <= n <= 4))
def test_any_integer_outside_one_to_four_is_refused_as_an_action(value: int) -> None:
    assert action_problem(value) is not None


# --- parse_scope: restrictions and the unrestricted flag ----------------------------------


def test_a_valid_scope_is_parsed_into_restrictions_in_order() -> None:
    found = Violations()
    restrictions = parse_scope(
        [
            RestrictionInput("catalog", ["catalog.entity.read"], [2]),
            RestrictionInput("scaffolder", [], [1, 3]),
            RestrictionInput("events"),
        ],
        False,
        found,
    )
    assert found.found == ()
    assert restrictions == (
        Restriction("catalog", ("catalog.entity.read",), (Action.READ,)),
        Restriction("scaffolder", (), (Action.CREATE, Action.UPDATE)),
        Restriction("events", (), ()),
    )
    assert all(type(a) is Action for r in restrictions for a in r.actions)


def test_no_restrictions_without_unrestricted_is_refused_naming_access_restrictions() -> None:
    violations = scope_fields([])
    assert violations == [
        FieldViolation(
            "access_restrictions",
            "must list at least one restriction unless unrestricted is set",
        )
    ]


def test_no_restrictions_with_unrestricted_set_is_accepted() -> None:
    found = Violations()
    assert parse_scope([], True, found) == ()
    assert found.found == ()


def test_two_restrictions_for_the_same_plugin_are_refused() -> None:
    violations = scope_fields(
        [
            RestrictionInput("catalog", ["catalog.entity.read"]),
            RestrictionInput("events"),
            RestrictionInput("catalog", ["catalog.entity.create"]),
        ]
    )
    assert violations == [FieldViolation("access_restrictions", "must not repeat a plugin")]


def test_under_authz_the_five_admin_permissions_are_accepted() -> None:
    found = Violations()
    restrictions = parse_scope(
        [RestrictionInput("authz", [p.value for p in AdminPermission])], False, found
    )
    assert found.found == ()
    assert set(restrictions[0].permissions) == {
        "authz.entry.read",
        "authz.entry.create",
        "authz.entry.update",
        "authz.entry.revoke",
        "authz.audit.read",
    }


@pytest.mark.parametrize(
    "permission",
    ["catalog.entity.read", "authz.entry.delete", "authz.entries.read", "Authz.entry.read"],
)
def test_under_authz_any_other_permission_is_refused_at_its_index(permission: str) -> None:
    violations = scope_fields(
        [
            RestrictionInput("catalog"),
            RestrictionInput("authz", ["authz.entry.read", permission]),
        ]
    )
    assert [v.field for v in violations] == ["access_restrictions[1].permissions[1]"]
    assert violations[0].description.startswith("under plugin 'authz' must be one of")


def test_admin_permission_names_are_not_special_under_another_plugin() -> None:
    assert scope_fields([RestrictionInput("catalog", ["authz.entry.delete"])]) == []


def test_beside_unrestricted_a_restriction_for_authz_is_accepted() -> None:
    found = Violations()
    restrictions = parse_scope([RestrictionInput("authz", ["authz.entry.read"])], True, found)
    assert found.found == ()
    assert restrictions == (Restriction("authz", ("authz.entry.read",)),)


@pytest.mark.parametrize("plugin", ["catalog", "authz-tools", "scaffolder"])
def test_beside_unrestricted_a_restriction_for_any_other_plugin_is_refused(plugin: str) -> None:
    violations = scope_fields(
        [RestrictionInput("authz", ["authz.entry.read"]), RestrictionInput(plugin)],
        unrestricted=True,
    )
    assert violations == [
        FieldViolation(
            "access_restrictions",
            "beside unrestricted, only the reserved plugin 'authz' may be listed",
        )
    ]


def test_a_repeated_permission_within_a_restriction_is_refused() -> None:
    violations = scope_fields(
        [
            RestrictionInput("events"),
            RestrictionInput(
                "catalog", ["catalog.entity.read", "catalog.entity.create", "catalog.entity.read"]
            ),
        ]
    )
    assert violations == [
        FieldViolation("access_restrictions[1].permissions", "must not repeat a value")
    ]


def test_a_repeated_action_within_a_restriction_is_refused() -> None:
    violations = scope_fields([RestrictionInput("catalog", [], [2, 1, 2])])
    assert violations == [
        FieldViolation("access_restrictions[0].actions", "must not repeat a value")
    ]


@pytest.mark.parametrize("value", [0, 5])
def test_an_action_number_outside_the_enum_is_refused_at_its_index(value: int) -> None:
    found = Violations()
    restrictions = parse_scope([RestrictionInput("catalog", [], [2, value])], False, found)
    assert list(found.found) == [
        FieldViolation(
            "access_restrictions[0].actions[1]", "must be one of CREATE, READ, UPDATE, DELETE"
        )
    ]
    assert restrictions[0].actions == (Action.READ,)


def test_a_bad_permission_is_named_by_its_exact_field_path() -> None:
    violations = scope_fields(
        [
            RestrictionInput("catalog", ["catalog.entity.read"]),
            RestrictionInput("search", ["search..query", "search.query"]),
        ]
    )
    assert [v.field for v in violations] == ["access_restrictions[1].permissions[0]"]


def test_a_bad_plugin_is_named_by_its_exact_field_path() -> None:
    violations = scope_fields([RestrictionInput("catalog"), RestrictionInput("Bad Plugin")])
    assert [v.field for v in violations] == ["access_restrictions[1].plugin"]


def test_an_empty_permission_in_a_list_is_refused_at_its_index() -> None:
    violations = scope_fields([RestrictionInput("catalog", ["catalog.entity.read", ""])])
    assert violations == [
        FieldViolation("access_restrictions[0].permissions[1]", "must not be empty")
    ]


def test_every_bad_field_of_a_scope_is_reported_at_once() -> None:
    violations = scope_fields(
        [
            RestrictionInput("Catalog", ["ok.perm", "bad perm"], [9]),
            RestrictionInput("authz", ["catalog.entity.read"], [1, 1]),
            RestrictionInput("authz"),
        ]
    )
    assert [v.field for v in violations] == [
        "access_restrictions[0].plugin",
        "access_restrictions[0].permissions[1]",
        "access_restrictions[0].actions[0]",
        "access_restrictions[1].permissions[0]",
        "access_restrictions[1].actions",
        "access_restrictions",
    ]


def test_more_than_the_maximum_number_of_restrictions_is_refused() -> None:
    raws = [RestrictionInput(f"plugin{i}") for i in range(MAX_RESTRICTIONS + 1)]
    assert scope_fields(raws) == [
        FieldViolation("access_restrictions", f"must list at most {MAX_RESTRICTIONS} restrictions")
    ]
    assert scope_fields(raws[:MAX_RESTRICTIONS]) == []


def test_more_than_the_maximum_number_of_permissions_is_refused() -> None:
    permissions = [f"catalog.p{i}" for i in range(MAX_PERMISSIONS + 1)]
    assert scope_fields([RestrictionInput("catalog", permissions)]) == [
        FieldViolation(
            "access_restrictions[0].permissions",
            f"must list at most {MAX_PERMISSIONS} permissions",
        )
    ]
    assert scope_fields([RestrictionInput("catalog", permissions[:MAX_PERMISSIONS])]) == []


def test_raise_if_any_raises_invalid_argument_naming_every_field() -> None:
    found = Violations()
    parse_scope([RestrictionInput("Bad", ["x..y"])], False, found)
    with pytest.raises(InvalidArgument) as raised:
        found.raise_if_any()
    assert [v.field for v in raised.value.violations] == [
        "access_restrictions[0].plugin",
        "access_restrictions[0].permissions[0]",
    ]
    assert "access_restrictions[0].plugin: must be lowercase" in str(raised.value)


def test_raise_if_any_is_silent_when_the_scope_is_valid() -> None:
    found = Violations()
    parse_scope([RestrictionInput("catalog")], False, found)
    found.raise_if_any()
    assert found.found == ()


@given(plugin=marked(), permission=marked())
def test_scope_violations_never_repeat_a_rejected_plugin_or_permission(
    plugin: str, permission: str
) -> None:
    found = Violations()
    parse_scope([RestrictionInput(plugin, [permission])], False, found)
    with pytest.raises(InvalidArgument) as raised:
        found.raise_if_any()
    assert len(raised.value.violations) >= 2
    assert plugin not in str(raised.value)
    assert permission not in str(raised.value)
    for violation in raised.value.violations:
        assert plugin not in violation.description
        assert permission not in violation.description


def test_only_the_first_violations_are_kept_and_the_rest_counted() -> None:
    found = Violations()
    restrictions = [RestrictionInput("catalog", [f"bad name {i}" for i in range(30)])]
    parse_scope(restrictions, False, found)
    assert len(found.found) == 10
    assert found.omitted == 20
    with pytest.raises(InvalidArgument) as raised:
        found.raise_if_any()
    assert raised.value.omitted == 20
    assert str(raised.value).endswith("; and 20 more")


def test_lists_past_their_limit_are_reported_by_count_not_validated_one_by_one() -> None:
    found = Violations()
    raws = [RestrictionInput("", ["x y"] * 1000, [9] * 1000)] * 10_000
    restrictions = parse_scope(raws, False, found)
    assert len(restrictions) == 64
    assert all(len(r.permissions) == 64 for r in restrictions)
    fields = [v.field for v in found.found]
    assert fields[0] == "access_restrictions"
    assert "access_restrictions[0].permissions" in fields
    # The count, 64 restrictions of (plugin, count, 64 names, duplicates, count, 4 actions,
    # duplicates), and the repeated plugin:
    assert found.omitted + len(found.found) == 1 + 64 * (1 + 1 + 64 + 1 + 1 + 4 + 1) + 1
