"""`authz-admin`'s grammar, with no I/O: flags, the compact restriction form, token text, and
naming an entry by id or subject."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import importlib.metadata
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz_admin._arguments import (
    AuditQuery,
    access_of,
    audit_query,
    duration,
    duration_text,
    field_labels,
    parse_arguments,
    restriction,
    update_fields,
)
from authz_admin._entries import by_subject, looks_like_id
from authz_admin._failures import (
    ADMIN_SERVICE,
    AUTHZ_SERVICE,
    EntryNotFound,
    ExitCode,
    OutputError,
    Situation,
    UsageError,
    explain,
)
from authz_admin._output import Output
from authz_admin._secrets import generate_token, read_admin_token, read_token, strip_one_newline
from authz_client import (
    ACTIONS,
    KEEP,
    Aborted,
    AlreadyExists,
    AuditEvent,
    AuthzClientError,
    DeadlineExceeded,
    Entry,
    FailedPrecondition,
    FieldChange,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Restriction,
    ServerError,
    Unauthenticated,
    Unavailable,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("catalog", Restriction("catalog")),
        ("catalog:catalog.entity.read", Restriction("catalog", ("catalog.entity.read",))),
        (
            "catalog:catalog.entity.read:read",
            Restriction("catalog", ("catalog.entity.read",), ("read",)),
        ),
        ("catalog::read,UPDATE", Restriction("catalog", (), ("read", "update"))),
        ("catalog:a.b,c.d", Restriction("catalog", ("a.b", "c.d"))),
    ],
)
def test_the_compact_restriction_form_reads_plugin_permissions_and_actions(
    text: str, expected: Restriction
) -> None:
    assert restriction(text) == expected


@pytest.mark.parametrize("text", ["", ":catalog.entity.read", "::read", "catalog::fly", "a:b:c:d"])
def test_a_restriction_without_a_plugin_or_with_a_bad_action_or_part_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        restriction(text)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("catalog:,,", "an empty permission in ',,'"),
        ("catalog:a,,b", "an empty permission in 'a,,b'"),
        ("catalog::read,", "an empty action in 'read,'"),
        ("catalog:,:read", "an empty permission in ','"),
        ("catalog:a.b,a.b", "the permission 'a.b' is listed twice"),
        ("catalog::read,READ", "the action 'read' is listed twice"),
    ],
)
def test_an_empty_or_repeated_item_in_a_restriction_is_refused_not_read_as_any(
    text: str, said: str
) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        restriction(text)
    assert said in str(refused.value)


@pytest.mark.parametrize("text", ["catalog:", "catalog::", "catalog::read"])
def test_an_empty_part_of_a_restriction_still_means_any(text: str) -> None:
    assert restriction(text).permissions == ()


def test_two_allows_for_one_plugin_are_refused_naming_the_plugin() -> None:
    args = parse_arguments(["create", "s", "--allow", "catalog", "--allow", "catalog::read"])
    with pytest.raises(UsageError) as refused:
        access_of(args)
    assert "the plugin 'catalog' is given twice" in refused.value.message
    assert "--allow 'catalog::read'" in refused.value.message


words = st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9]{0,8}){0,2}", fullmatch=True)


@given(
    plugin=st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True),
    permissions=st.lists(words, max_size=3, unique=True),
    actions=st.lists(st.sampled_from(ACTIONS), max_size=4, unique=True),
)
def test_a_restriction_printed_in_compact_form_reads_back_the_same(
    plugin: str, permissions: list[str], actions: list[str]
) -> None:
    written = Restriction(plugin, tuple(permissions), tuple(actions))
    assert restriction(str(written)) == written


def test_allow_is_repeatable_and_keeps_its_order() -> None:
    args = parse_arguments(["create", "sync", "--allow", "catalog::read", "--allow", "events"])
    assert args.allow == [Restriction("catalog", (), ("read",)), Restriction("events")]
    assert args.unrestricted is False


def test_common_flags_work_before_and_after_the_command() -> None:
    before = parse_arguments(["--json", "--target", "h:1", "--timeout", "2.5", "list"])
    after = parse_arguments(["list", "--json", "--target", "h:1", "--timeout", "2.5"])
    for args in (before, after):
        assert (args.json, args.target, args.timeout) == (True, "h:1", 2.5)


def test_unset_common_flags_are_left_for_the_environment_to_fill() -> None:
    args = parse_arguments(["get", "sync"])
    assert (args.json, args.target, args.timeout, args.admin_token_file) == (
        False,
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["create", "sync", "--allow", "catalog", "--token", "a-secret-token-value"],
        ["rotate", "sync", "--token=a-secret-token-value"],
        ["check", "catalog", "--token", "a-secret-token-value"],
        ["--admin-token", "a-secret-token-value", "list"],
        ["list", "--admin-token", "a-secret-token-value"],
    ],
)
def test_a_token_given_as_a_flag_value_is_refused_without_echoing_it(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_arguments(argv)
    assert exit_.value.code == ExitCode.USAGE
    said = capsys.readouterr()
    assert "shell history" in said.err
    assert "a-secret-token-value" not in said.out + said.err


def test_flags_are_never_abbreviated_so_token_cannot_mean_token_file() -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_arguments(["check", "catalog", "--token-f", "path"])
    assert exit_.value.code == ExitCode.USAGE


@pytest.mark.parametrize(
    "argv",
    [["create", "sync", "--bogus"], ["rotate", "sync", "--bogus=1"], ["list", "extra"]],
)
def test_an_unknown_argument_of_a_command_prints_that_commands_usage(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    command = next(a for a in argv if not a.startswith("-"))
    with pytest.raises(SystemExit) as exit_:
        parse_arguments(argv)
    assert exit_.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"usage: authz-admin {command} ")
    assert f"authz-admin {command}: error: unrecognized arguments: " in err


@pytest.mark.parametrize(
    "argv",
    [
        ["create", "sync", "--allow", "catalog", "--token-file", "f", "--generate"],
        ["update", "sync", "--expires", "2030-01-01", "--no-expiry"],
        ["list", "--timeout", "0"],
        ["list", "--timeout", "soon"],
        ["update", "sync", "--expires", "next tuesday"],
        ["check", "catalog", "--action", "fly"],
        ["check"],
        ["revoke"],
    ],
)
def test_contradictory_or_malformed_flags_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_arguments(argv)
    assert exit_.value.code == ExitCode.USAGE
    assert "error:" in capsys.readouterr().err


def test_an_expiry_without_an_offset_is_taken_as_utc() -> None:
    naive = parse_arguments(["update", "sync", "--expires", "2030-01-31T12:00:00"]).expires
    zulu = parse_arguments(["update", "sync", "--expires", "2030-01-31T12:00:00Z"]).expires
    offset = parse_arguments(["update", "sync", "--expires", "2030-01-31T14:00:00+02:00"]).expires
    assert naive == zulu == offset == datetime(2030, 1, 31, 12, tzinfo=UTC)
    assert offset.utcoffset() == timezone(timedelta(hours=2)).utcoffset(None)


def test_an_update_keeps_every_field_no_flag_names() -> None:
    fields = update_fields(parse_arguments(["update", "sync", "--description", ""]))
    assert fields == {
        "description": "",
        "restrictions": KEEP,
        "unrestricted": KEEP,
        "expire_time": KEEP,
    }


def test_allow_in_an_update_replaces_the_whole_access_and_clears_unrestricted() -> None:
    fields = update_fields(parse_arguments(["update", "sync", "--allow", "catalog::read"]))
    assert fields["restrictions"] == (Restriction("catalog", (), ("read",)),)
    assert fields["unrestricted"] is False


def test_unrestricted_in_an_update_drops_restrictions_not_listed_beside_it() -> None:
    fields = update_fields(parse_arguments(["update", "sync", "--unrestricted"]))
    assert (fields["restrictions"], fields["unrestricted"]) == ((), True)


def test_no_expiry_clears_the_expiry_and_expires_sets_it() -> None:
    cleared = update_fields(parse_arguments(["update", "sync", "--no-expiry"]))
    assert cleared["expire_time"] is None
    set_ = update_fields(parse_arguments(["update", "sync", "--expires", "2030-01-31"]))
    assert set_["expire_time"] == datetime(2030, 1, 31, tzinfo=UTC)


def test_an_update_with_nothing_to_change_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as failure:
        update_fields(parse_arguments(["update", "sync", "--etag", "r1"]))
    assert failure.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("tok\n", "tok"),
        ("tok\r\n", "tok"),
        ("tok\n\n", "tok\n"),
        ("tok", "tok"),
        (" tok \n", " tok "),
    ],
)
def test_exactly_one_trailing_newline_is_stripped(text: str, token: str) -> None:
    assert strip_one_newline(text) == token


def test_a_token_is_read_from_piped_stdin() -> None:
    token = read_token(None, io.StringIO("piped-token-1\n"), what="new token", confirm=True)
    assert token == "piped-token-1"


def test_empty_token_input_is_a_usage_error_that_names_the_ways_in() -> None:
    with pytest.raises(UsageError) as failure:
        read_token(None, io.StringIO("\n"), what="token to check", confirm=False)
    assert "--token-file" in failure.value.message


@pytest.mark.parametrize(
    "token", ["admin-token\nrest-of-it", "admin-token-0123\n", "admin token", "admin-tökén-123"]
)
def test_an_admin_token_a_header_cannot_carry_is_a_usage_error_naming_its_source(
    token: str,
) -> None:
    with pytest.raises(UsageError) as failure:
        read_admin_token(None, {"AUTHZ_ADMIN_TOKEN": token}, needs="authz.entry.read")
    assert failure.value.exit_code == ExitCode.USAGE
    assert failure.value.message.startswith("AUTHZ_ADMIN_TOKEN: the token holds ")
    assert token not in failure.value.message


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_at_a_terminal_a_new_token_is_asked_twice_and_must_match() -> None:
    def asking(*answers: str) -> Callable[[str], str]:
        replies = iter(answers)
        return lambda _prompt: next(replies)

    with pytest.raises(UsageError, match="differ"):
        read_token(None, Terminal(), what="new token", confirm=True, prompt=asking("t-1", "t-2"))
    token = read_token(
        None, Terminal(), what="new token", confirm=True, prompt=asking("t-1", "t-1")
    )
    assert token == "t-1"


def test_generated_tokens_are_24_random_bytes_in_base64() -> None:
    tokens = {generate_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(len(base64.b64decode(t, validate=True)) == 24 for t in tokens)


def entry(entry_id: str, subject: str, state: str = "active") -> Entry:
    return Entry(entry_id, subject, "", (Restriction("catalog"),), False, state, "r1")


def test_the_unrevoked_entry_with_a_subject_wins_over_revoked_ones() -> None:
    entries = [entry("1", "sync", "revoked"), entry("2", "sync"), entry("3", "other")]
    assert by_subject(entries, "sync").id == "2"


def test_a_subject_only_revoked_entries_hold_names_the_one_revoked_entry() -> None:
    assert by_subject([entry("1", "sync", "revoked")], "sync").id == "1"


def test_a_subject_several_revoked_entries_hold_is_ambiguous_and_lists_their_ids() -> None:
    with pytest.raises(EntryNotFound) as failure:
        by_subject([entry("id-1", "sync", "revoked"), entry("id-2", "sync", "revoked")], "sync")
    assert failure.value.exit_code == ExitCode.NOT_FOUND
    assert [d.split()[0] for d in failure.value.details] == ["id-1", "id-2"]


def test_an_unknown_name_is_not_found() -> None:
    with pytest.raises(EntryNotFound):
        by_subject([entry("1", "sync")], "nothing")


def test_an_id_names_its_entry_even_when_a_subject_matches_too() -> None:
    entries = [entry("sync", "first"), entry("2", "sync")]
    assert by_subject(entries, "sync").id == "sync"


def test_only_uuids_are_looked_up_as_ids_first() -> None:
    assert looks_like_id("01e46fac-30ed-4d23-8e65-086d152865cd")
    assert not looks_like_id("catalog-sync")


SITUATION = Situation("127.0.0.1:50051", 5.0, "authz.entry.create", "catalog-sync")


@pytest.mark.parametrize(
    ("error", "code", "hint"),
    [
        (InvalidArgument("bad", (FieldViolation("subject", "no spaces"),)), 2, "subject"),
        (NotFound("no entry has this id"), 3, "list --all"),
        (AlreadyExists("subject: taken"), 6, "pick another subject"),
        (AlreadyExists("token: already in use"), 6, "gen-token"),
        (AlreadyExists("new_token: already in use"), 6, "--generate"),
        (Aborted("etag: stale"), 6, "authz-admin get catalog-sync"),
        (FailedPrecondition("a revoked entry cannot be updated"), 6, "create a new entry"),
        (Unauthenticated("admin token rejected"), 4, "AUTHZ_ADMIN_TOKEN"),
        (PermissionDenied("does not grant"), 4, "a token with authz.entry.create"),
        (Unavailable("failed to connect to all addresses"), 5, "no server answered"),
        (Unavailable("storage busy"), 5, "try again shortly"),
        (DeadlineExceeded("deadline exceeded"), 5, "within 5 s"),
        (ServerError("boom"), 5, "Its log says more"),
    ],
)
def test_each_client_error_maps_to_its_documented_exit_code_and_a_next_step(
    error: AuthzClientError, code: int, hint: str
) -> None:
    failure = explain(error, SITUATION)
    assert failure.exit_code == code
    assert hint in "\n".join((failure.message, *failure.details))


@pytest.mark.parametrize("where", [["--version"], ["--version", "list"]])
def test_version_prints_the_installed_version_and_exits_0(
    where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_arguments(where)
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"authz-admin {importlib.metadata.version('authz-service')}\n"


@pytest.mark.parametrize("name", ["token", "new_token"])
def test_a_token_in_use_is_advised_a_fresh_token_and_never_another_subject(name: str) -> None:
    said = f"{name}: already in use or retired (tokens are never reused)"
    message = explain(AlreadyExists(said), SITUATION).message
    assert "subject" not in message
    assert message.count("never reused") == 1
    assert "--generate" in message


def test_a_field_the_server_names_is_said_as_the_flag_that_gave_it_with_its_value() -> None:
    args = parse_arguments(
        [
            "update", "sync", "--allow", "catalog:Bad!:read", "--allow", "Events",
            "--expires", "2001-01-01",
        ]
    )  # fmt: skip
    refused = InvalidArgument(
        "bad",
        (
            FieldViolation("entry.access_restrictions[0].permissions[0]", "must be words"),
            FieldViolation("entry.access_restrictions[1].plugin", "must be lowercase"),
            FieldViolation("entry.expire_time", "must be in the future"),
            FieldViolation("entry.unknown_field", "is odd"),
        ),
    )
    failure = explain(refused, Situation("t", 5.0, "", fields=field_labels(args)))
    assert failure.details == (
        "--allow 'catalog:Bad!:read': permission 'Bad!': must be words",
        "--allow 'Events': plugin 'Events': must be lowercase",
        "--expires 2001-01-01T00:00:00Z: must be in the future",
        "entry.unknown_field: is odd",
    )


def test_a_check_field_the_server_names_is_said_as_its_argument() -> None:
    args = parse_arguments(["check", "Bad!", "--permission", "p q"])
    refused = InvalidArgument("bad", (FieldViolation("plugin", "must be lowercase"),))
    failure = explain(refused, Situation("t", 5.0, "", fields=field_labels(args)))
    assert failure.details == ("PLUGIN 'Bad!': must be lowercase",)
    assert field_labels(args)["permission"] == "--permission 'p q'"


UNIMPLEMENTED = ServerError("Method not found!")
UNIMPLEMENTED.code = grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize(
    ("service", "serves", "said"),
    [
        (ADMIN_SERVICE, {AUTHZ_SERVICE}, "admin commands go to that port"),
        (AUTHZ_SERVICE, {ADMIN_SERVICE}, "`check` asks Check on the main port"),
        (ADMIN_SERVICE, set(), "is it an authz-service?"),
        (AUTHZ_SERVICE, {AUTHZ_SERVICE, ADMIN_SERVICE}, "is it an authz-service?"),
    ],
)
def test_an_unimplemented_call_says_which_listener_serves_it(
    service: str, serves: set[str], said: str
) -> None:
    situation = Situation("h:1", 5.0, "", service=service, serves=frozenset(serves))
    failure = explain(UNIMPLEMENTED, situation)
    assert failure.exit_code == ExitCode.NO_SERVER
    assert said in failure.message


class FullStream(io.StringIO):
    """A stream on a full disk: every write fails as /dev/full's do."""

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("stdout", [FullStream(), None])
def test_a_result_stdout_cannot_take_is_an_output_error_that_is_never_0_or_1(
    stdout: io.StringIO | None,
) -> None:
    out = Output(stdout, io.StringIO(), as_json=False)
    with pytest.raises(OutputError) as failure:
        out.token(generate_token())
    assert failure.value.exit_code == ExitCode.OUTPUT
    assert failure.value.exit_code not in {ExitCode.OK, ExitCode.DENIED}
    assert failure.value.message.startswith("cannot write to stdout: ")


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("0s", timedelta(0)),
    ],
)
def test_rotate_grace_reads_a_number_and_a_unit(text: str, span: timedelta) -> None:
    assert parse_arguments(["rotate", "sync", "--grace", text]).grace == span


def test_rotate_without_grace_asks_for_none() -> None:
    assert parse_arguments(["rotate", "sync"]).grace is None


@pytest.mark.parametrize("text", ["24", "h", "1.5h", "-1h", "1w", "24 h", "1h30m", "", "+1d"])
def test_a_grace_that_is_not_a_duration_is_a_usage_error_naming_grace(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_arguments(["rotate", "sync", f"--grace={text}"])
    assert exit_.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "argument --grace: " in err
    assert "90s, 15m, 24h or 7d" in err


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from("smhd"))
def test_a_duration_written_back_reads_as_the_same_span(number: int, unit: str) -> None:
    span = duration(f"{number}{unit}")
    assert duration(duration_text(span)) == span


def test_a_grace_the_server_refuses_is_said_as_the_flag_with_its_value() -> None:
    args = parse_arguments(["rotate", "sync", "--grace", "192h"])
    refused = InvalidArgument(
        "bad", (FieldViolation("previous_token_grace", "must be at most 7d"),)
    )
    failure = explain(refused, Situation("t", 5.0, "", fields=field_labels(args)))
    assert failure.details == ("--grace 8d: must be at most 7d",)


NOW = datetime(2030, 1, 31, 12, tzinfo=UTC)


def test_audit_takes_an_entry_an_actor_and_a_time_range() -> None:
    args = parse_arguments(
        ["audit", "catalog-sync", "--actor", "bootstrap-admin", "--since", "2030-01-01",
         "--until", "2030-01-31T10:00:00+02:00", "--json"]
    )  # fmt: skip
    assert audit_query(args, NOW) == AuditQuery(
        "catalog-sync",
        "bootstrap-admin",
        datetime(2030, 1, 1, tzinfo=UTC),
        datetime(2030, 1, 31, 8, tzinfo=UTC),
    )
    assert (args.verify, args.json) == (False, True)


def test_audit_alone_asks_for_every_event() -> None:
    args = parse_arguments(["audit"])
    assert audit_query(args, NOW) == AuditQuery(None, None, None, None)


def test_a_duration_in_audit_since_and_until_counts_back_from_now() -> None:
    args = parse_arguments(["audit", "--since", "7d", "--until", "90m"])
    query = audit_query(args, NOW)
    assert (query.since, query.until) == (NOW - timedelta(days=7), NOW - timedelta(minutes=90))


@pytest.mark.parametrize("option", ["--since", "--until"])
@pytest.mark.parametrize("text", ["yesterday", "24", "2030-13-01", "1w"])
def test_an_audit_time_that_is_neither_a_time_nor_a_duration_is_a_usage_error(
    option: str, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_arguments(["audit", option, text])
    assert exit_.value.code == ExitCode.USAGE
    assert f"argument {option}: {text!r} is neither a time" in capsys.readouterr().err


def test_an_audit_range_that_ends_before_it_starts_is_a_usage_error() -> None:
    args = parse_arguments(["audit", "--since", "1h", "--until", "2h"])
    with pytest.raises(UsageError) as failure:
        audit_query(args, NOW)
    assert "--since (2030-01-31T11:00:00Z) must be before --until (2030-01-31T10:00:00Z)" in (
        failure.value.message
    )


@pytest.mark.parametrize(
    ("filters", "named"),
    [
        (["catalog-sync"], "ENTRY"),
        (["--actor", "bootstrap-admin"], "--actor"),
        (["--since", "24h"], "--since"),
        (["--until", "2030-01-01"], "--until"),
        (["catalog-sync", "--since", "1h"], "ENTRY, --since"),
    ],
)
def test_audit_verify_takes_no_filter_since_it_checks_the_whole_chain(
    filters: list[str], named: str
) -> None:
    args = parse_arguments(["audit", "--verify", *filters])
    with pytest.raises(UsageError) as failure:
        audit_query(args, NOW)
    assert failure.value.exit_code == ExitCode.USAGE
    assert f"takes no {named}: run `authz-admin audit --verify` alone" in failure.value.message


def test_audit_verify_alone_is_a_whole_chain_query() -> None:
    args = parse_arguments(["audit", "--verify", "--json"])
    assert args.verify
    assert audit_query(args, NOW) == AuditQuery(None, None, None, None)


def rotated(until: datetime | None) -> Entry:
    return dataclasses.replace(entry("e-1", "sync"), previous_token_expire_time=until)


def test_an_entry_shows_when_its_previous_token_stops_working_only_while_it_works() -> None:
    shown, plain = io.StringIO(), io.StringIO()
    Output(shown, io.StringIO(), as_json=False).entry(rotated(NOW))
    Output(plain, io.StringIO(), as_json=False).entry(rotated(None))
    assert "previous token  works until 2030-01-31T12:00:00Z\n" in shown.getvalue()
    assert "previous token" not in plain.getvalue()


def test_the_list_has_a_previous_token_column_only_when_an_entry_has_one() -> None:
    with_one, without = io.StringIO(), io.StringIO()
    Output(with_one, io.StringIO(), as_json=False).entries([rotated(None), rotated(NOW)])
    Output(without, io.StringIO(), as_json=False).entries([rotated(None)])
    header, first, second = with_one.getvalue().splitlines()
    assert header.endswith("PREVIOUS TOKEN UNTIL")
    assert (first.split()[-1], second.split()[-1]) == ("-", "2030-01-31T12:00:00Z")
    assert "PREVIOUS" not in without.getvalue()


def test_an_entry_in_json_says_when_its_previous_token_stops_working() -> None:
    assert rotated(NOW).to_dict()["previous_token_expire_time"] == "2030-01-31T12:00:00Z"
    assert rotated(None).to_dict()["previous_token_expire_time"] is None


def audit_event(sequence: int, *changes: FieldChange, code: int = 0) -> AuditEvent:
    return AuditEvent(
        sequence=sequence,
        time=NOW + timedelta(microseconds=sequence),
        actor_entry_id="a-1",
        actor_subject="bootstrap-admin",
        rpc="UpdateEntry",
        entry_id="e-1",
        changes=changes,
        code=code,
        peer="10.0.0.7",
        user_agent="grpc-python",
        previous_hash="",
        hash=f"h{sequence}",
    )


def test_audit_events_show_as_a_table_with_a_row_per_changed_field() -> None:
    shown = io.StringIO()
    events = [
        audit_event(
            1,
            FieldChange("description", '""', '"new\\nline"'),
            FieldChange("unrestricted", "false", "true"),
        ),
        audit_event(2, code=7),
    ]
    Output(shown, io.StringIO(), as_json=False).audit_events(events)
    lines = [line.split("  ") for line in shown.getvalue().splitlines()]
    cells = [[cell.strip() for cell in line if cell.strip()] for line in lines]
    assert cells == [
        ["SEQ", "TIME", "ACTOR", "RPC", "ENTRY", "OUTCOME", "PEER", "CHANGES"],
        ["1", "2030-01-31T12:00:00Z", "bootstrap-admin", "UpdateEntry", "e-1", "OK", "10.0.0.7",
         'description: "" -> "new\\nline"'],
        ["unrestricted: false -> true"],
        ["2", "2030-01-31T12:00:00Z", "bootstrap-admin", "UpdateEntry", "e-1",
         "PERMISSION_DENIED", "10.0.0.7", "-"],
    ]  # fmt: skip


def test_audit_events_in_json_carry_every_field_and_the_exact_time() -> None:
    shown = io.StringIO()
    Output(shown, io.StringIO(), as_json=True).audit_events(
        [audit_event(3, FieldChange("token", "null", '"(new token)"'))]
    )
    assert json.loads(shown.getvalue()) == [
        {
            "sequence": 3,
            "time": "2030-01-31T12:00:00.000003Z",
            "actor_entry_id": "a-1",
            "actor_subject": "bootstrap-admin",
            "rpc": "UpdateEntry",
            "entry_id": "e-1",
            "changes": [{"field": "token", "before": "null", "after": '"(new token)"'}],
            "code": 0,
            "peer": "10.0.0.7",
            "user_agent": "grpc-python",
            "previous_hash": "",
            "hash": "h3",
        }
    ]


def test_an_intact_chain_is_said_in_one_line_with_its_count_then_the_newest_hash() -> None:
    shown = io.StringIO()
    Output(shown, io.StringIO(), as_json=False).chain_intact(12, audit_event(12))
    assert shown.getvalue().splitlines() == [
        "12 events, chain intact",
        "newest: event 12 (2030-01-31T12:00:00Z), hash h12",
    ]


def test_a_broken_chain_has_an_exit_code_of_its_own() -> None:
    # A value another code already had would make it that code's alias, named after it.
    assert (ExitCode.CHAIN_BROKEN.name, int(ExitCode.CHAIN_BROKEN)) == ("CHAIN_BROKEN", 8)
