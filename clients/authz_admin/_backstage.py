"""`authz-admin import-backstage`: the plan `_backstage_config` reads from a Backstage
app-config, settled with what the server holds, shown before anything is sent, and (unless a
dry run) created idempotently: an entry already there with the same subject, token and access
is present, and nothing the server holds is ever changed.

No token is printed or put in a message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import grpc

from authz_client import (
    AlreadyExists,
    AuthzClient,
    AuthzClientError,
    CheckResult,
    Entry,
    InvalidArgument,
    Restriction,
)

from ._backstage_config import (
    CONFLICT,
    CREATE,
    CREATED,
    IMPORTED,
    PRESENT,
    SKIPPED,
    STATUSES,
    Imported,
    Plan,
)
from ._failures import ExitCode, NoServer, OutputError
from ._output import Output

PLAN_COLUMNS = ("SOURCE", "SUBJECT", "PLAN", "ACCESS", "WHY")
UNRESTRICTED_PROBE = "catalog"  # a plugin an unrestricted entry allows (any but authz)


def run_import(
    plan: Plan, client: AuthzClient, checker: AuthzClient, out: Output, *, dry_run: bool
) -> ExitCode:
    """Settle the plan with what the server holds, show it, and (unless `dry_run`) create
    what it says; OK when every entry is created or present, else INCOMPLETE."""
    out.ready()  # a stdout that is closed already: nothing is created unseen
    holders = {e.subject: e for e in client.iter_entries()}  # unrevoked: active or expired
    items = [_settled(item, holders.get(item.subject), checker) for item in plan.items]
    if any(item.unrestricted and item.status == CREATE for item in items):
        out.warn(
            "--allow-unrestricted: the entries without accessRestrictions are imported "
            "unrestricted; they reach every plugin except authz"
        )
    if not out.as_json:
        out.table([PLAN_COLUMNS, *(_row(item) for item in items)])
    if not dry_run:
        items = [_created(item, client, out) for item in items]
    counts = {status: sum(item.status == status for item in items) for status in STATUSES}
    try:
        _show_counts(plan, items, counts, out, dry_run=dry_run)
    except OutputError as failure:
        if dry_run:
            raise
        raise _after_creating(failure) from None
    left_out = sum(item.status not in IMPORTED for item in items)
    if not left_out:
        return ExitCode.OK
    out.warn(
        f"{left_out} of {len(items)} entries were not imported (conflict, skipped or not "
        "importable): the plan's WHY (the reason in --json) says why"
    )
    return ExitCode.INCOMPLETE


def _show_counts(
    plan: Plan, items: list[Imported], counts: dict[str, int], out: Output, *, dry_run: bool
) -> None:
    if out.as_json:
        out.document(
            {
                "app_config": plan.app_config,
                "dry_run": dry_run,
                "entries": [item.to_dict(dry_run=dry_run) for item in items],
                "counts": {status.replace(" ", "_"): n for status, n in counts.items()},
            }
        )
        return
    said = ", ".join(f"{n} {'to create' if s == CREATE else s}" for s, n in counts.items() if n)
    out.line(f"{'dry run, nothing changed: ' if dry_run else ''}{said or 'no entries'}")


def _after_creating(failure: OutputError) -> OutputError:
    return OutputError(
        f"{failure.message}; the entries the import created stay: run it again to see the "
        "plan (they show as present)"
    )


def _row(item: Imported) -> tuple[str, ...]:
    return (item.source, item.subject, item.status, item.access(), item.reason)


def _settled(item: Imported, holder: Entry | None, checker: AuthzClient) -> Imported:
    """A planned create, settled: still create, present, or a conflict with the server."""
    if item.status != CREATE:
        return item
    if holder is None:
        why = _token_taken(item, checker)
        return dataclasses.replace(item, status=CONFLICT, reason=why) if why else item
    answer = _check(checker, item.token, holder.restrictions)
    taken = dataclasses.replace(item, status=CONFLICT, entry_id=holder.id)
    if not (answer.allowed and answer.entry_id == holder.id):
        if holder.state == "expired":
            why = f"the subject is the expired entry {holder.id}'s: revoke it to reuse it"
        else:
            why = (
                f"the subject is the entry {holder.id}'s, which holds another token and is "
                "never changed here: revoke it, or give this one another subject"
            )
        return dataclasses.replace(taken, reason=why)
    if _scope(holder.restrictions, holder.unrestricted) != _scope(
        item.restrictions, item.unrestricted
    ):
        held = dataclasses.replace(
            item, restrictions=holder.restrictions, unrestricted=holder.unrestricted
        ).access()
        why = (
            f"the entry {holder.id} has this subject and token with other access ({held}); "
            "it is never changed here: `authz-admin update` changes it"
        )
        return dataclasses.replace(taken, reason=why)
    why = f"the entry {holder.id} has this subject, token and access"
    return dataclasses.replace(taken, status=PRESENT, reason=why)


def _token_taken(item: Imported, checker: AuthzClient) -> str:
    """Why the token cannot go to a new entry, as Check tells; "" when no entry holds it."""
    answer = _check(checker, item.token, item.restrictions)
    if answer.allowed:
        return f"the token is already the entry {answer.entry_id}'s ({answer.subject})"
    if answer.reason == "unknown_token":
        return ""
    if answer.reason == "revoked":
        return "the token was a revoked entry's, and tokens are never reused: give it a new one"
    if answer.reason == "expired":
        return "the token is an expired entry's: revoke that one and give this a new token"
    return "the token is already another entry's"


def _check(checker: AuthzClient, token: str, restrictions: Sequence[Restriction]) -> CheckResult:
    """Check the token with a request the restrictions allow (for none: a plugin unrestricted
    allows). A Check that finds the token's entry counts as a use of it (LAST USED)."""
    first = restrictions[0] if restrictions else Restriction(UNRESTRICTED_PROBE)
    permission = first.permissions[0] if first.permissions else None
    action = first.actions[0] if first.actions else None
    try:
        return checker.check(token, first.plugin, permission, action)
    except AuthzClientError as error:
        if error.code != grpc.StatusCode.UNIMPLEMENTED:
            raise
        raise NoServer(
            f"{checker.target} does not serve Check, which tells whether an entry holds a token "
            "already: if it is an admin listener, give --check-target the main listener"
        ) from None


def _scope(
    restrictions: Iterable[Restriction], unrestricted: bool
) -> tuple[bool, frozenset[tuple[str, frozenset[str], frozenset[str]]]]:
    return unrestricted, frozenset(
        (r.plugin, frozenset(r.permissions), frozenset(r.actions)) for r in restrictions
    )


def _created(item: Imported, client: AuthzClient, out: Output) -> Imported:
    """Create a planned entry, and say how it went (a line of its own, for people)."""
    if item.status != CREATE:
        return item
    try:
        entry = client.create_entry(
            item.subject,
            item.token,
            restrictions=item.restrictions,
            unrestricted=item.unrestricted,
            description=f"imported from Backstage ({item.source})",
        )
    except AlreadyExists as error:  # taken since the plan was made, or a retired token
        done = dataclasses.replace(item, status=CONFLICT, reason=error.message)
    except InvalidArgument as error:
        said = "; ".join(f"{v.field}: {v.description}" for v in error.violations)
        done = dataclasses.replace(item, status=SKIPPED, reason=said or error.message)
    except AuthzClientError:
        out.warn(
            f"stopped at {item.source}: the entries created before it stay; run the import "
            "again once the error below is fixed (they show as present)"
        )
        raise
    else:
        done = dataclasses.replace(item, status=CREATED, entry_id=entry.id, reason="")
    if not out.as_json:
        said = f"entry {done.entry_id}" if done.status == CREATED else done.reason
        try:
            out.line(f"{done.status}  {done.subject}  {said}")
        except OutputError as failure:
            raise _after_creating(failure) from None
    return done
