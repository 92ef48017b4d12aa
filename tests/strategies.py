"""Hypothesis strategies for the fields a careless or hostile client may put in a request.

Every value is one protobuf accepts (no surrogates in strings, int32 enums, any int64
Timestamp), so the messages are well-formed; what the fields hold is anything at all: valid
names, odd Unicode, control and format characters, empty and huge strings, out-of-range
numbers. Strings nested in repeated fields stay short, so a request stays far below the
server's 4 MiB receive limit however many elements it has. Each function builds its strategy
once (cached): examples draw from them by the thousand.

Beside them are values every rule accepts (`VALID_SUBJECTS`, `valid_scopes` and the like), for
requests meant to succeed, and `draw_fields`, which mixes the two kinds in one request.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

from google.protobuf import timestamp_pb2
from hypothesis import strategies as st

from authz.v1 import authz_pb2 as pb

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
# The range google.protobuf.Timestamp allows: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
# A huge string: far past every field's limit, still a small part of a 4 MiB request.
HUGE_CHARS = 100_000

ODD_STRINGS = (
    "",
    " ",
    "\x00",
    "\t",
    "\x7f",
    "\x1b[31mred",
    "\u200b",
    "\ufeff",
    "\u202eevil",
    "\u2028",
    "\U0010ffff",
    "\U0001f600",
    "e\u0301",
    "\u0130",  # dotted capital I: lower() makes it two characters
    "\u017f",  # long s: upper() makes it "S"
    "\ufb01",  # the fi ligature: upper() makes it "FI"
    "\xdf",
    "%s%n%x",
    "{}",
    "${jndi:ldap://x/a}",
    "' OR '1'='1",
    "../../etc/passwd",
    "\\",
    '"',
    "null",
)
# Characters most validators forget: controls, format, private use, unassigned, separators,
# combining marks.
_ODD_CHARACTERS = st.characters(
    categories=("Cc", "Cf", "Co", "Cn", "Zs", "Zl", "Zp", "Mn", "Me"),
)


@functools.cache
def huge_text() -> st.SearchStrategy[str]:
    """One character or short piece repeated up to HUGE_CHARS times."""
    pieces = st.one_of(
        st.sampled_from(["a", "\xe9", "\U0001f600", "\x00", "a.b", "a b"]),
        st.characters(codec="utf-8"),
    )
    return st.builds(lambda piece, count: piece * count, pieces, st.integers(1_000, HUGE_CHARS))


@functools.cache
def odd_text(max_size: int = 40, *, huge: bool = True) -> st.SearchStrategy[str]:
    """Any string: arbitrary Unicode, odd characters only, known troublemakers, or huge."""
    options = [
        st.text(max_size=max_size),
        st.text(_ODD_CHARACTERS, max_size=max_size),
        st.sampled_from(ODD_STRINGS),
    ]
    if huge:
        options.append(huge_text())
    return st.one_of(options)


@functools.cache
def plugins(*, huge: bool = True) -> st.SearchStrategy[str]:
    """Plugin ids: common and valid ones, limits, and anything else."""
    return st.one_of(
        st.sampled_from(["catalog", "scaffolder", "events", "authz", "tech-insights"]),
        st.from_regex(r"[a-z][a-z0-9]{0,8}([-_][a-z0-9]{1,4}){0,2}", fullmatch=True),
        st.sampled_from(["a" * 64, "a" * 65, "Catalog", "cat alog", "-catalog", "catalog-"]),
        odd_text(huge=huge),
    )


ADMIN_PERMISSIONS = (
    "authz.entry.read",
    "authz.entry.create",
    "authz.entry.update",
    "authz.entry.revoke",
)


@functools.cache
def permissions(*, huge: bool = True) -> st.SearchStrategy[str]:
    """Permission names: common and valid ones, the admin ones, limits, anything else."""
    return st.one_of(
        st.sampled_from(["catalog.entity.read", "catalog.entity.delete", *ADMIN_PERMISSIONS]),
        st.from_regex(
            r"[A-Za-z][A-Za-z0-9]{0,6}(\.[A-Za-z][A-Za-z0-9_-]{0,6}[0-9a-z]){0,3}", fullmatch=True
        ),
        st.sampled_from(["p" * 128, "p" * 129, "authz.entry.delete", "a..b", ".a", "a."]),
        odd_text(huge=huge),
    )


@functools.cache
def subjects() -> st.SearchStrategy[str]:
    """Entry subjects: valid ones (printable ASCII, no whitespace), limits, anything else."""
    return st.one_of(
        st.from_regex(r"[!-~]{1,24}", fullmatch=True),
        st.sampled_from(["s" * 128, "s" * 129, "bootstrap-admin"]),
        odd_text(),
    )


@functools.cache
def tokens() -> st.SearchStrategy[str]:
    """Tokens: valid ones of any script, byte and length limits, and anything else."""
    return st.one_of(
        st.from_regex(r"[!-~]{8,48}", fullmatch=True),
        st.text(st.characters(categories=("L", "M", "N", "P", "S")), min_size=8, max_size=40),
        st.sampled_from(["t" * 512, "t" * 513, "\xe9" * 256, "\xe9" * 257, "\U0001f600" * 129]),
        odd_text(),
    )


@functools.cache
def descriptions() -> st.SearchStrategy[str]:
    """Free text: printable text, the 1024-character limit, and anything else."""
    return st.one_of(
        st.text(st.characters(categories=("L", "M", "N", "P", "S", "Zs")), max_size=60),
        st.sampled_from(["d" * 1024, "d" * 1025, "\U0001f600" * 1024]),
        odd_text(),
    )


@functools.cache
def actions() -> st.SearchStrategy[int]:
    """`authz.v1.Action` numbers: the four actions, unspecified, and any other int32."""
    return st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, -1]), INT32)


@functools.cache
def timestamps() -> st.SearchStrategy[timestamp_pb2.Timestamp]:
    """Timestamps: well in the past or future, at the range's ends, and any int64/int32 pair."""
    now = int(time.time())
    seconds = st.one_of(
        st.integers(3_600, 10**9).map(lambda ahead: now + ahead),
        st.integers(60, 10**10).map(lambda back: now - back),
        st.sampled_from(
            [0, -1, MIN_TIMESTAMP_SECONDS, MIN_TIMESTAMP_SECONDS - 1, MAX_TIMESTAMP_SECONDS]
        ),
        st.sampled_from([MAX_TIMESTAMP_SECONDS + 1, 2**63 - 1, -(2**63)]),
        INT64,
    )
    nanos = st.one_of(st.sampled_from([0, 999_999_999, 10**9, -1]), INT32)
    return st.builds(timestamp_pb2.Timestamp, seconds=seconds, nanos=nanos)


UPDATABLE_PATHS = ("description", "access_restrictions", "unrestricted", "expire_time")


@functools.cache
def mask_paths() -> st.SearchStrategy[list[str]]:
    """Field mask paths: the updatable ones, near misses, repeats, many, and anything else."""
    path = st.one_of(
        st.sampled_from(UPDATABLE_PATHS),
        st.sampled_from(
            ["subject", "id", "etag", "state", "entry.description", "*", "", "Description"]
        ),
        odd_text(huge=False),
    )
    many = st.builds(lambda one, count: [one] * count, path, st.integers(50, 400))
    return st.one_of(st.lists(path, max_size=5), many)


@functools.cache
def page_sizes() -> st.SearchStrategy[int]:
    """ListEntries page sizes: small, the limits (0, 1000), negative and any other int32."""
    return st.one_of(st.integers(0, 5), st.sampled_from([-1, 999, 1000, 1001, 2**31 - 1]), INT32)


@functools.cache
def page_token_lookalikes() -> st.SearchStrategy[str]:
    """Strings shaped like a page token (base64url, a dot, base64url) that no server issued."""
    return st.from_regex(r"[A-Za-z0-9_=-]{0,60}(\.[A-Za-z0-9_=-]{0,30}){0,2}", fullmatch=True)


@functools.cache
def header_names() -> st.SearchStrategy[str]:
    """HTTP header names: the authorization header in any case, and anything else."""
    return st.one_of(
        st.sampled_from(["authorization", "Authorization", "AUTHORIZATION", "cookie", ":path"]),
        odd_text(huge=False),
    )


# -- values every rule accepts, and requests that mix them with anything ----------------------


FOUR_ACTIONS = [pb.CREATE, pb.READ, pb.UPDATE, pb.DELETE]
INDEX = st.integers(0, 2**16 - 1)


def pick(draw: st.DrawFn, items: Sequence[Any]) -> Any:
    """One of `items`, a list the examples grow: drawn as an index of fixed range, so that
    replaying an example (to shrink it) draws the same way however long the list is now."""
    index = draw(INDEX)
    return items[index % len(items)] if items else None


@functools.cache
def restrictions(max_size: int = 2) -> st.SearchStrategy[list[pb.AccessRestriction]]:
    """A few restrictions with a few elements each: few enough bad fields for one trailer."""
    one = st.builds(
        pb.AccessRestriction,
        plugin=plugins(huge=False),
        permissions=st.lists(permissions(huge=False), max_size=2),
        actions=st.lists(actions(), max_size=2),
    )
    return st.lists(one, max_size=max_size)


VALID_ACTIONS = st.lists(st.sampled_from(FOUR_ACTIONS), unique=True, max_size=2)
ADMIN_PERMISSION_LISTS = st.lists(st.sampled_from(ADMIN_PERMISSIONS), unique=True, max_size=4)
ADMIN_RESTRICTIONS = st.builds(
    pb.AccessRestriction,
    plugin=st.just("authz"),
    permissions=ADMIN_PERMISSION_LISTS,
    actions=st.lists(st.sampled_from(FOUR_ACTIONS), unique=True, max_size=4),
)
# Without actions, the rights an authz restriction grants are its permissions (all if none),
# in either reading of the API contract's words (see fuzz_model.Rights).
PLAIN_ADMIN_SCOPES = st.none() | st.builds(
    pb.AccessRestriction, plugin=st.just("authz"), permissions=ADMIN_PERMISSION_LISTS
)
MAYBE_ADMIN = st.none() | ADMIN_RESTRICTIONS
OTHER_RESTRICTIONS = st.builds(
    pb.AccessRestriction,
    plugin=st.sampled_from(["catalog", "scaffolder", "events"]),
    permissions=st.lists(
        st.sampled_from(["catalog.entity.read", "events.publish"]), unique=True, max_size=2
    ),
    actions=VALID_ACTIONS,
)


@st.composite
def valid_scopes(
    draw: st.DrawFn,
    admin: st.SearchStrategy[pb.AccessRestriction | None] = MAYBE_ADMIN,
) -> tuple[list[pb.AccessRestriction], bool]:
    """Restrictions and `unrestricted` that CreateEntry accepts, with an authz restriction
    when `admin` draws one."""
    others = draw(st.lists(OTHER_RESTRICTIONS, max_size=2, unique_by=lambda r: r.plugin))
    admin_part = draw(admin)
    unrestricted = draw(st.booleans())
    if unrestricted:
        return ([admin_part] if admin_part else []), True
    chosen = others + ([admin_part] if admin_part else [])
    return (chosen or [pb.AccessRestriction(plugin="catalog")]), False


@functools.cache
def optional_timestamps() -> st.SearchStrategy[timestamp_pb2.Timestamp | None]:
    """No timestamp, or any of `timestamps()`."""
    return st.none() | timestamps()


def _ahead(seconds: int, nanos: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=int(time.time()) + seconds, nanos=nanos)


# Values every rule accepts, for requests meant to succeed.
VALID_SUBJECTS = st.from_regex(r"[!-~]{1,24}", fullmatch=True)
VALID_TOKENS = st.from_regex(r"[!-~]{8,48}", fullmatch=True) | st.text(
    st.characters(categories=("L", "N", "P", "S")), min_size=8, max_size=40
)
VALID_DESCRIPTIONS = st.text(
    st.characters(categories=("L", "M", "N", "P", "S")) | st.just(" "), max_size=80
)
VALID_EXPIRIES = st.none() | st.builds(
    _ahead, st.integers(3_600, 10**8), st.integers(0, 999_999_999)
)
MODES = st.sampled_from(["valid", "valid", "one odd", "one odd", "all odd"])


def draw_fields(
    draw: st.DrawFn, spec: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]]
) -> dict[str, Any]:
    """A value per field from `spec` (valid, anything): all valid, all but one, or all
    anything; so that requests meant to succeed are common, and so are ones with one fault."""
    mode = draw(MODES)
    odd = draw(st.sampled_from(sorted(spec))) if mode == "one odd" else None
    return {
        name: draw(anything if mode == "all odd" or name == odd else valid)
        for name, (valid, anything) in spec.items()
    }
