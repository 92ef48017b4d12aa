"""`authz-admin audit`: print the audit log, or check its hash chain with --verify."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TextIO

from authz_client import AuditEvent, AuthzClient, ChainBreak, verify_audit_chain

from ._arguments import audit_query
from ._entries import entry_id_of
from ._failures import ChainBroken, ExitCode
from ._output import SERVER_ACTOR, Output, when

PERMISSION = "authz.audit.read (and authz.entry.read to name an entry by subject)"

# What each way of breaking the chain means, for the message that names the bad event.
_MEANING = {
    "edited": "its stored fields no longer give its hash: it was changed outside the service",
    "missing event(s) before it": "the events between it and the one before were deleted "
    "outside the service",
    "chain broken": "it does not follow the event before it (its previous_hash is another "
    "event's): an event before it was replaced or rewritten, or the log is out of order",
}


def audit(
    args: argparse.Namespace, out: Output, stdin: TextIO
) -> Callable[[AuthzClient], ExitCode]:
    """The `audit` command: its filters are checked before anything is sent."""
    query = audit_query(args, datetime.now(UTC))

    def show(client: AuthzClient) -> ExitCode:
        entry_id = entry_id_of(client, query.entry) if query.entry is not None else ""
        actor_id = entry_id_of(client, query.actor) if query.actor is not None else ""
        events = client.iter_audit_events(entry_id, actor_id, since=query.since, until=query.until)
        out.audit_events(list(events))
        return ExitCode.OK

    def verify(client: AuthzClient) -> ExitCode:
        read = _Read(client.iter_audit_events())
        broken = verify_audit_chain(read)
        if broken is not None:
            raise _broken(broken, read.last)
        out.chain_intact(read.count, read.last)
        return ExitCode.OK

    return verify if args.verify else show


class _Read:
    """The events of a walk over the log, counted as they are read, keeping the last one:
    after a chain break, the bad event, since verification stops there."""

    def __init__(self, events: Iterable[AuditEvent]) -> None:
        self._events = events
        self.count = 0
        self.last: AuditEvent | None = None

    def __iter__(self) -> Iterator[AuditEvent]:
        for event in self._events:
            self.last = event
            self.count += 1
            yield event


def _broken(broken: ChainBreak, bad: AuditEvent | None) -> ChainBroken:
    name = f"event {bad.sequence}" if bad is not None else f"position {broken.position}"
    meaning = _MEANING.get(broken.reason, broken.reason)
    details = []
    if bad is not None:
        actor = bad.actor_subject or SERVER_ACTOR
        details.append(f"{name}: {when(bad.time)} {bad.rpc} by {actor} on {bad.entry_id or '-'}")
    if broken.position > 1:
        details.append(f"events 1 to {broken.position}, before it, are intact")
    elif broken.position == 1:
        details.append("event 1, before it, is intact")
    return ChainBroken(
        f"the audit log's chain is broken at {name} ({broken.reason}): {meaning}", *details
    )
