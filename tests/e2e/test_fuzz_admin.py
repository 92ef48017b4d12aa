"""Every AdminService RPC fuzzed over a real channel, with a default client's limits.

One server (see fuzz_model.seeded_fuzz) serves every example, and every call is held to what
fuzz_model says each call must satisfy; a failed admin call changes nothing: neither a stored
row nor a Check answer. Three properties that need unusual inputs have tests of their own: no
escalation among admins, many bad fields at once, and listing pages of large entries.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from functools import partial

import pytest
import strategies as fuzzed
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    INDEX,
    PLAIN_ADMIN_SCOPES,
    VALID_DESCRIPTIONS,
    VALID_EXPIRIES,
    VALID_SUBJECTS,
    VALID_TOKENS,
    draw_fields,
    optional_timestamps,
    pick,
    restrictions,
    valid_scopes,
)

from authz.v1 import authz_pb2 as pb
from authz_service.core.rules import (
    DESCRIPTION_MAX_CHARS,
    MAX_MASK_PATHS,
    REVOKE_REASON_MAX_CHARS,
    Violations,
    parse_scope,
    subject_problem,
    text_problem,
    token_problem,
)
from fuzz_model import (
    ABORTED,
    DENIED,
    EXISTS,
    INVALID,
    NO_RIGHTS,
    NOT_FOUND,
    OK,
    PRECONDITION,
    TIMEOUT,
    Code,
    Fuzz,
    Outcome,
    Rights,
    assert_expected,
    fuzz_settings,
    inputs,
    micros,
    number,
    readable_time_problem,
    seeded_fuzz,
    stored_view,
    strings_of,
    token_parts,
    without,
)
from server_process import ADMIN_METADATA


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    """This module's server and its model (see fuzz_model.seeded_fuzz)."""
    yield from seeded_fuzz(tmp_path_factory)


# -- strategies that need the model ----------------------------------------------------------


GARBAGE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)
CALLER_KINDS = st.sampled_from(["admin", "admin", "admin", "fixture", "known", "garbage"])


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@st.composite
def callers(draw: st.DrawFn, model: Fuzz) -> tuple[tuple[str, str], ...]:
    """Who calls: mostly the bootstrap admin; the fixture's callers; any token the model knows;
    garbage authorization values (printable ASCII, as metadata must be)."""
    kind = draw(CALLER_KINDS)
    if kind == "fixture":
        return draw(st.sampled_from(sorted(model.callers.values())))
    if kind == "known":
        return bearer(
            pick(draw, sorted(t for t in model.holders if t.isascii() and t.isprintable()))
        )
    if kind == "garbage":
        value = draw(GARBAGE)
        return (("authorization", f"Bearer {value}" if draw(st.booleans()) else value),)
    return ADMIN_METADATA


# -- CreateEntry ------------------------------------------------------------------------------


def create_problems(model: Fuzz, request: pb.CreateEntryRequest, rights: Rights) -> set[Code]:
    """The codes CreateEntry may answer by the model: one per problem, OK if none."""
    found = Violations()
    found.check("subject", subject_problem(request.subject))
    found.check("token", token_problem(request.token))
    found.check("description", text_problem(request.description, DESCRIPTION_MAX_CHARS))
    parse_scope(inputs(request.access_restrictions), request.unrestricted, found)
    time_problem = (
        readable_time_problem(request.expire_time) if request.HasField("expire_time") else False
    )
    problems = set()
    if found.found or time_problem:
        problems.add(INVALID)
    if request.subject in model.active_subjects() or request.token in model.holders:
        problems.add(EXISTS)
    if rights.may_lack(Rights.of(request.access_restrictions)):
        problems.add(DENIED)
    if time_problem is None:
        problems |= {OK, INVALID}
    return problems or {OK}


def create(
    model: Fuzz, request: pb.CreateEntryRequest, metadata: Sequence[tuple[str, str]]
) -> Outcome:
    before = model.snapshot()
    secrets = [request.token, *(p for _, v in metadata for p in token_parts(v))]
    outcome = model.call(
        "CreateEntry",
        lambda: model.server.admin.CreateEntry(request, metadata=metadata, timeout=TIMEOUT),
        without(request, "token"),
        secrets,
    )
    if outcome.code != OK:
        assert model.snapshot() == before, f"a failed CreateEntry ({outcome}) changed the store"
        return outcome
    entry: pb.Entry = outcome.response
    assert (entry.subject, entry.description, entry.unrestricted) == (
        request.subject,
        request.description,
        request.unrestricted,
    )
    assert list(entry.access_restrictions) == list(request.access_restrictions)
    assert entry.state == pb.ACTIVE, entry
    assert entry.id, entry
    assert entry.etag, entry
    assert micros(entry.expire_time) == micros(request.expire_time)
    model.record(entry, request.token)
    model.sent |= set(strings_of(entry))
    got = model.server.admin.GetEntry(pb.GetEntryRequest(id=entry.id), metadata=ADMIN_METADATA)
    assert stored_view(got) == stored_view(entry)
    model.assert_check_agrees(entry.id)
    return outcome


@fuzz_settings(250)
@given(data=st.data())
def test_create_entry_answers_as_the_model_says_and_a_refusal_changes_nothing(
    fuzz: Fuzz, data: st.DataObject
) -> None:
    metadata = data.draw(callers(fuzz), label="caller")
    fields = data.draw(
        st.composite(draw_fields)(
            {
                "subject": (VALID_SUBJECTS, fuzzed.subjects()),
                "token": (VALID_TOKENS, fuzzed.tokens()),
                "description": (VALID_DESCRIPTIONS, fuzzed.descriptions()),
                "scope": (valid_scopes(), st.tuples(restrictions(), st.booleans())),
                "expire_time": (VALID_EXPIRIES, optional_timestamps()),
            }
        ),
        label="request",
    )
    scope, unrestricted = fields.pop("scope")
    request = pb.CreateEntryRequest(**fields, access_restrictions=scope, unrestricted=unrestricted)
    refusal = fuzz.authorization_codes("CreateEntry", metadata)
    rights = fuzz.rights_of(metadata) or NO_RIGHTS
    expected = refusal or create_problems(fuzz, request, rights)
    outcome = create(fuzz, request, metadata)
    if DENIED in expected and not refusal:
        # Escalation has its own test, with inputs that reach it; here it only widens.
        expected |= {OK, INVALID, EXISTS}
    assert_expected(outcome, expected)


# -- UpdateEntry ------------------------------------------------------------------------------


def update_invalid(request: pb.UpdateEntryRequest, target: pb.Entry | None) -> bool | None:
    """Whether an update breaks a rule (in the fields its mask names); None if too close to
    an expiry to call."""
    change = request.entry
    paths = list(request.update_mask.paths)
    found = Violations()
    found.check("entry.id", None if change.id else "is required")
    found.check("etag", None if request.etag else "is required")
    if len(paths) > MAX_MASK_PATHS:
        found.check("update_mask.paths", "too many")
    for path in paths:
        found.check("update_mask", None if path in fuzzed.UPDATABLE_PATHS else "unknown")
    if not paths and not request.new_token:
        found.check("update_mask", "is empty")
    if request.new_token:
        found.check("new_token", token_problem(request.new_token))
    if "description" in paths:
        found.check("entry.description", text_problem(change.description, DESCRIPTION_MAX_CHARS))
    if target is not None and {"access_restrictions", "unrestricted"} & set(paths):
        unrestricted = change.unrestricted if "unrestricted" in paths else target.unrestricted
        parse_scope(inputs(new_scope(request, target)), unrestricted, found)
    if found.found:
        return True
    if "expire_time" in paths and change.HasField("expire_time"):
        return readable_time_problem(change.expire_time)
    return False


def new_scope(request: pb.UpdateEntryRequest, target: pb.Entry) -> Sequence[pb.AccessRestriction]:
    """The restrictions the entry would have after the update."""
    if "access_restrictions" in request.update_mask.paths:
        return request.entry.access_restrictions
    return target.access_restrictions


def update_problems(model: Fuzz, request: pb.UpdateEntryRequest, rights: Rights) -> set[Code]:
    """The codes UpdateEntry may answer by the model: one per problem, OK if none."""
    target = model.entries.get(request.entry.id)
    invalid = update_invalid(request, target)
    problems = set()
    if invalid is not False:
        problems.add(INVALID)
    if invalid is None:
        problems.add(OK)
    if request.entry.id and target is None:
        problems |= {NOT_FOUND, INVALID}
    if target is not None:
        if target.HasField("revoke_time"):
            problems.add(PRECONDITION)
        if request.etag != target.etag:
            problems.add(ABORTED)
        held = Rights.of(target.access_restrictions)
        if rights.may_lack(held, Rights.of(new_scope(request, target))):
            problems.add(DENIED)
    if request.new_token and request.new_token in model.holders:
        problems.add(EXISTS)
    return problems or {OK}


def update(
    model: Fuzz, request: pb.UpdateEntryRequest, metadata: Sequence[tuple[str, str]]
) -> Outcome:
    before = model.snapshot()
    secrets = [request.new_token, *(p for _, v in metadata for p in token_parts(v))]
    outcome = model.call(
        "UpdateEntry",
        lambda: model.server.admin.UpdateEntry(request, metadata=metadata, timeout=TIMEOUT),
        without(request, "new_token"),
        secrets,
    )
    entry_id = request.entry.id
    if outcome.code != OK:
        assert model.snapshot() == before, f"a failed UpdateEntry ({outcome}) changed the store"
        if entry_id in model.entries:
            model.assert_check_agrees(entry_id)
        return outcome
    entry: pb.Entry = outcome.response
    old = model.entries[entry_id]
    assert (entry.id, entry.subject) == (entry_id, old.subject)
    assert entry.etag != old.etag
    paths = set(request.update_mask.paths)
    if "description" in paths:
        assert entry.description == request.entry.description
    if "access_restrictions" in paths:
        assert list(entry.access_restrictions) == list(request.entry.access_restrictions)
    if "expire_time" in paths:
        assert micros(entry.expire_time) == micros(request.entry.expire_time)
    model.record(entry, request.new_token)
    model.sent |= set(strings_of(entry))
    got = model.server.admin.GetEntry(pb.GetEntryRequest(id=entry.id), metadata=ADMIN_METADATA)
    assert stored_view(got) == stored_view(entry)
    model.assert_check_agrees(entry_id)
    return outcome


@st.composite
def entry_ids(
    draw: st.DrawFn, model: Fuzz, scope: tuple[list[pb.AccessRestriction], bool], *, known: bool
) -> str:
    """With `known`, a fresh entry's id (made with `scope`) or one the examples made earlier;
    else an unknown uuid or anything."""
    if known:
        if draw(st.booleans()):
            earlier: str | None = pick(draw, model.targets())
            if earlier:
                return earlier
        return model.create_target(scope).id
    if draw(st.booleans()):
        return str(draw(st.uuids()))
    return draw(fuzzed.odd_text())


@fuzz_settings(250)
@given(data=st.data())
def test_update_entry_answers_as_the_model_says_and_a_refusal_changes_nothing(
    fuzz: Fuzz, data: st.DataObject
) -> None:
    metadata = data.draw(callers(fuzz), label="caller")
    scope = data.draw(valid_scopes(), label="fresh target's scope")
    fields = data.draw(
        st.composite(draw_fields)(
            {
                "id": (entry_ids(fuzz, scope, known=True), entry_ids(fuzz, scope, known=False)),
                "paths": (
                    st.lists(st.sampled_from(fuzzed.UPDATABLE_PATHS), max_size=3, unique=True),
                    fuzzed.mask_paths(),
                ),
                "description": (VALID_DESCRIPTIONS, fuzzed.descriptions()),
                "scope": (valid_scopes(), st.tuples(restrictions(), st.booleans())),
                "expire_time": (VALID_EXPIRIES, optional_timestamps()),
                "new_token": (st.just("") | st.just("") | VALID_TOKENS, fuzzed.tokens()),
                "stale etag": (st.just(""), st.sampled_from(["r0", "r1", ""]) | fuzzed.odd_text()),
            }
        ),
        label="request",
    )
    current = fuzz.entries.get(fields["id"])
    etag = fields["stale etag"] or (current.etag if current else "")
    restrictions_, unrestricted = fields["scope"]
    change = pb.Entry(
        id=fields["id"],
        description=fields["description"],
        access_restrictions=restrictions_,
        unrestricted=unrestricted,
        expire_time=fields["expire_time"],
        # Fields outside the mask, and read-only ones, are ignored.
        subject=data.draw(fuzzed.subjects(), label="subject"),
        etag=data.draw(fuzzed.odd_text(huge=False), label="entry.etag"),
        state=number(data.draw(fuzzed.actions(), label="state")),
    )
    request = pb.UpdateEntryRequest(
        entry=change,
        update_mask=field_mask_pb2.FieldMask(paths=fields["paths"]),
        new_token=fields["new_token"],
        etag=etag,
    )
    refusal = fuzz.authorization_codes("UpdateEntry", metadata)
    rights = fuzz.rights_of(metadata) or NO_RIGHTS
    expected = refusal or update_problems(fuzz, request, rights)
    outcome = update(fuzz, request, metadata)
    if DENIED in expected and not refusal:
        expected |= {OK, INVALID, NOT_FOUND, PRECONDITION, ABORTED, EXISTS}
    assert_expected(outcome, expected)


# -- RevokeEntry ------------------------------------------------------------------------------


@fuzz_settings(120)
@given(data=st.data())
def test_revoke_entry_answers_as_the_model_says_and_a_refusal_changes_nothing(
    fuzz: Fuzz, data: st.DataObject
) -> None:
    metadata = data.draw(callers(fuzz), label="caller")
    scope = data.draw(valid_scopes(), label="fresh target's scope")
    entry_id = data.draw(
        entry_ids(fuzz, scope, known=True) | entry_ids(fuzz, scope, known=False), label="id"
    )
    reason = data.draw(st.just("") | fuzzed.descriptions(), label="reason")
    request = pb.RevokeEntryRequest(id=entry_id, reason=reason)
    target = fuzz.entries.get(entry_id)
    rights = fuzz.rights_of(metadata) or NO_RIGHTS
    problems = set()
    if not entry_id or text_problem(reason, REVOKE_REASON_MAX_CHARS) is not None:
        problems.add(INVALID)
    if entry_id and target is None:
        problems |= {NOT_FOUND, INVALID}
    if target is not None and rights.may_lack(Rights.of(target.access_restrictions)):
        # Escalation has its own test, with inputs that reach it; here it only widens.
        problems |= {DENIED, OK, INVALID}
    expected = fuzz.authorization_codes("RevokeEntry", metadata) or problems or {OK}
    outcome = revoke(fuzz, request, metadata)
    assert_expected(outcome, expected)


def revoke(
    model: Fuzz, request: pb.RevokeEntryRequest, metadata: Sequence[tuple[str, str]]
) -> Outcome:
    target = model.entries.get(request.id)
    before = model.snapshot()
    outcome = model.call(
        "RevokeEntry",
        lambda: model.server.admin.RevokeEntry(request, metadata=metadata, timeout=TIMEOUT),
        request,
        [p for _, v in metadata for p in token_parts(v)],
    )
    if outcome.code != OK:
        assert model.snapshot() == before, f"a failed RevokeEntry ({outcome}) changed the store"
    else:
        entry: pb.Entry = outcome.response
        assert (entry.id, entry.state) == (request.id, pb.REVOKED), entry
        assert entry.HasField("revoke_time"), entry
        if target is not None and target.HasField("revoke_time"):
            assert stored_view(entry) == stored_view(target), "revoking twice changed the entry"
        else:
            assert entry.revoke_reason == request.reason
        model.record(entry)
    if target is not None:
        model.assert_check_agrees(request.id)
    return outcome


# -- GetEntry and ListEntries -----------------------------------------------------------------


@fuzz_settings(200)
@given(data=st.data())
def test_get_entry_answers_the_entry_as_last_written(fuzz: Fuzz, data: st.DataObject) -> None:
    metadata = data.draw(callers(fuzz), label="caller")
    known = sorted(fuzz.entries)
    kind = data.draw(st.sampled_from(["known", "known", "uuid", "odd"]), label="kind of id")
    if kind == "known":
        entry_id = data.draw(INDEX.map(lambda i: known[i % len(known)]), label="id")
    elif kind == "uuid":
        entry_id = str(data.draw(st.uuids(), label="id"))
    else:
        entry_id = data.draw(fuzzed.odd_text(), label="id")
    request = pb.GetEntryRequest(id=entry_id)
    outcome = fuzz.call(
        "GetEntry",
        lambda: fuzz.server.admin.GetEntry(request, metadata=metadata, timeout=TIMEOUT),
        request,
        [p for _, v in metadata for p in token_parts(v)],
    )
    refusal = fuzz.authorization_codes("GetEntry", metadata)
    if refusal:
        expected = refusal
    elif not entry_id:
        expected = {INVALID}
    else:
        expected = {OK} if entry_id in fuzz.entries else {NOT_FOUND, INVALID}
    assert_expected(outcome, expected)
    if outcome.code == OK:
        assert stored_view(outcome.response) == stored_view(fuzz.entries[entry_id])


def creation_key(entry: pb.Entry) -> tuple[int, str]:
    return micros(entry.create_time), entry.id


@st.composite
def page_tokens(draw: st.DrawFn, issued: Sequence[str]) -> tuple[str, bool]:
    """No token, one the server issued, one tampered with, a lookalike, or anything; and
    whether it was tampered with."""
    kind = draw(st.sampled_from(["issued", "issued", "tampered", "none", "lookalike", "odd"]))
    if kind in {"issued", "tampered"}:
        token = pick(draw, issued) or ""
        if kind == "issued":
            return token, False
        at = draw(st.integers(0, 2**16 - 1)) % (len(token) + 1)
        piece = draw(st.sampled_from(["", "=", ".", "A", "_"]) | st.characters(codec="utf-8"))
        return token[:at] + piece + token[at + draw(st.integers(0, 2)) :], True
    if kind == "lookalike":
        return draw(fuzzed.page_token_lookalikes()), False
    if kind == "odd":
        return draw(fuzzed.odd_text()), False
    return "", False


@fuzz_settings(150)
@given(data=st.data())
def test_list_entries_answers_the_page_the_model_says(fuzz: Fuzz, data: st.DataObject) -> None:
    metadata = data.draw(callers(fuzz), label="caller")
    page_size = data.draw(fuzzed.page_sizes(), label="page_size")
    page_token, tampered = data.draw(page_tokens(sorted(fuzz.page_tokens)), label="page_token")
    include_revoked = data.draw(st.booleans(), label="include_revoked")
    request = pb.ListEntriesRequest(
        page_size=page_size, page_token=page_token, include_revoked=include_revoked
    )
    outcome = fuzz.call(
        "ListEntries",
        lambda: fuzz.server.admin.ListEntries(request, metadata=metadata, timeout=TIMEOUT),
        request,
        [p for _, v in metadata for p in token_parts(v)],
    )
    refusal = fuzz.authorization_codes("ListEntries", metadata)
    issued = not page_token or page_token in fuzz.page_tokens
    if refusal:
        expected = refusal
    elif page_size < 0:
        expected = {INVALID}
    elif issued:
        expected = {OK}
    else:
        # A tampered token may still decode to the same bytes (base64's spare bits, padding).
        expected = {INVALID, OK} if tampered else {INVALID}
    assert_expected(outcome, expected)
    if outcome.code != OK:
        return
    response: pb.ListEntriesResponse = outcome.response
    keys = [creation_key(e) for e in response.entries]
    assert keys == sorted(keys), "entries not in creation order"
    if issued:
        # The next entries after the cursor: page_size of them (100 if 0, at most 1000), or
        # fewer (not none) where a page of large entries stops early.
        limit = min(page_size or 100, 1000)
        after = fuzz.page_tokens.get(page_token, (-(2**63), ""))
        wanted = sorted(
            (e for e in fuzz.entries.values() if include_revoked or not e.HasField("revoke_time")),
            key=creation_key,
        )
        ids = [e.id for e in wanted if creation_key(e) > after]
        got = [e.id for e in response.entries]
        assert got == ids[: len(got)]
        assert len(got) <= limit
        assert bool(got) == bool(ids)
        assert bool(response.next_page_token) == (len(ids) > len(got))
    for entry in response.entries:
        assert stored_view(entry) == stored_view(fuzz.entries[entry.id])
    if response.next_page_token:
        fuzz.page_tokens[response.next_page_token] = creation_key(response.entries[-1])


# -- the properties that need inputs of their own ---------------------------------------------


# The fixture's admins with some rights, and the calls they may make.
LIMITED_ADMINS = {
    "entry-creator": ["CreateEntry"],
    "entry-updater": ["UpdateEntry"],
    "entry-revoker": ["RevokeEntry"],
    "entry-manager": ["CreateEntry", "UpdateEntry", "RevokeEntry"],
}


@fuzz_settings(60)
@given(data=st.data())
def test_no_admin_grants_or_touches_authz_rights_it_does_not_hold(
    fuzz: Fuzz, data: st.DataObject
) -> None:
    """The API contract, section 4, "No escalation among admins": such a call is
    PERMISSION_DENIED and changes nothing; any other valid call succeeds. The authz restrictions
    here list no actions, so both readings of the rights agree (see Rights)."""
    who = data.draw(st.sampled_from(sorted(LIMITED_ADMINS)), label="caller")
    rpc = data.draw(st.sampled_from(LIMITED_ADMINS[who]), label="rpc")
    metadata = fuzz.callers[who]
    rights = fuzz.rights_of(metadata)
    assert rights is not None
    wanted, unrestricted = data.draw(valid_scopes(PLAIN_ADMIN_SCOPES), label="scope")
    asked = [Rights.of(wanted)]
    fuzz.counter += 1
    token = f"escalation-token-{fuzz.counter:06}"
    if rpc == "CreateEntry":
        request = pb.CreateEntryRequest(
            subject=f"escalation-{fuzz.counter}",
            token=token,
            access_restrictions=wanted,
            unrestricted=unrestricted,
        )
        outcome = create(fuzz, request, metadata)
    else:
        target = fuzz.create_target(data.draw(valid_scopes(PLAIN_ADMIN_SCOPES), label="target"))
        asked = [Rights.of(target.access_restrictions)]
        if rpc == "RevokeEntry":
            outcome = revoke(fuzz, pb.RevokeEntryRequest(id=target.id), metadata)
        else:
            rotate = data.draw(st.booleans(), label="rotate")
            if not rotate:
                asked.append(Rights.of(wanted))
            change = pb.UpdateEntryRequest(
                entry=pb.Entry(id=target.id, access_restrictions=wanted, unrestricted=unrestricted),
                update_mask=field_mask_pb2.FieldMask(
                    paths=[] if rotate else ["access_restrictions", "unrestricted"]
                ),
                new_token=token if rotate else "",
                etag=target.etag,
            )
            outcome = update(fuzz, change, metadata)
    assert rights.may_lack(*asked) == rights.surely_lacks(*asked)
    escalates = rights.surely_lacks(*asked)
    assert outcome.code == (DENIED if escalates else OK), (
        f"{who} holding {sorted(rights.effective)} asked {rpc} for "
        f"{[sorted(r.effective) for r in asked]}: {outcome}"
    )


@st.composite
def many_bad_fields(draw: st.DrawFn, model: Fuzz) -> tuple[str, Message]:
    """A Create or Update (of a fresh entry) with tens to hundreds of bad repeated fields."""
    bad = pb.AccessRestriction(
        plugin=draw(st.sampled_from(["", "Bad Plugin", "x" * 65])),
        permissions=[draw(st.sampled_from(["not valid", "", "authz.entry.delete"]))]
        * draw(st.integers(0, 80)),
        actions=[number(draw(st.sampled_from([0, 5, -1, 2**31 - 1])))] * draw(st.integers(0, 80)),
    )
    many = [bad] * draw(st.integers(1, 120))
    if draw(st.booleans()):
        return "CreateEntry", pb.CreateEntryRequest(
            subject="many-bad-fields", token="many-bad-fields-token", access_restrictions=many
        )
    target = model.create_target(([pb.AccessRestriction(plugin="catalog")], False))
    return "UpdateEntry", pb.UpdateEntryRequest(
        entry=pb.Entry(id=target.id, access_restrictions=many),
        update_mask=field_mask_pb2.FieldMask(
            paths=[*draw(fuzzed.mask_paths()), "access_restrictions"]
        ),
        etag=target.etag,
    )


@fuzz_settings(30)
@given(data=st.data())
def test_a_request_with_many_bad_fields_is_refused_in_a_trailer_a_default_client_accepts(
    fuzz: Fuzz, data: st.DataObject
) -> None:
    rpc, request = data.draw(many_bad_fields(fuzz), label="request")
    method = getattr(fuzz.server.admin, rpc)
    before = fuzz.snapshot()
    outcome = fuzz.call(
        rpc,
        lambda: method(request, metadata=ADMIN_METADATA, timeout=TIMEOUT),
        without(request, "token") if rpc == "CreateEntry" else request,
        [],
    )
    assert outcome.code == INVALID, outcome
    assert fuzz.snapshot() == before


BIG_ENTRIES = 9


def _big_restrictions() -> list[pb.AccessRestriction]:
    """The largest scope an entry may have: 64 plugins with 64 permissions of 128 characters."""
    return [
        pb.AccessRestriction(
            plugin=f"plugin{p}",
            permissions=[f"p{i:03}" + "x" * 124 for i in range(64)],
            actions=[pb.CREATE, pb.READ, pb.UPDATE, pb.DELETE],
        )
        for p in range(64)
    ]


@fuzz_settings(15)
@given(page_size=st.integers(0, 1000), include_revoked=st.booleans())
def test_every_listing_page_fits_a_default_client_however_large_the_entries(
    fuzz: Fuzz, page_size: int, include_revoked: bool
) -> None:
    big = [e for e in fuzz.entries.values() if e.subject.startswith("largest-entry-")]
    for n in range(len(big), BIG_ENTRIES):
        request = pb.CreateEntryRequest(
            subject=f"largest-entry-{n}",
            token=f"largest-entry-token-{n:04}",
            description="d" * DESCRIPTION_MAX_CHARS,
            access_restrictions=_big_restrictions(),
        )
        assert create(fuzz, request, ADMIN_METADATA).code == OK
    listing = pb.ListEntriesRequest(page_size=page_size, include_revoked=include_revoked)
    seen = 0
    while True:
        invoke = partial(
            fuzz.server.admin.ListEntries, listing, metadata=ADMIN_METADATA, timeout=TIMEOUT
        )
        outcome = fuzz.call("ListEntries", invoke, listing, [])
        assert outcome.code == OK, outcome
        seen += len(outcome.response.entries)
        if not outcome.response.next_page_token:
            break
        listing = pb.ListEntriesRequest(
            page_size=page_size,
            page_token=outcome.response.next_page_token,
            include_revoked=include_revoked,
        )
    listed = [e for e in fuzz.entries.values() if include_revoked or not e.HasField("revoke_time")]
    assert seen == len(listed)


def test_the_server_logged_no_traceback_no_error_and_no_token_and_exits_cleanly(
    fuzz: Fuzz,
) -> None:
    """Runs last: stops the server, so every line it wrote has been read."""
    assert fuzz.server.stop(signal.SIGTERM) == 0
    fuzz.assert_log_clean(since=0)
