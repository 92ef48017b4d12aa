"""The audit log's hash chain, checked on the client: no one has to trust the server that
serves the events to know whether a stored event was edited or deleted.

Each event's `hash` is SHA-256 over the previous event's hash (lowercase hex, "" for the
first), a newline, and the event's canonical bytes: its fields as compact JSON with sorted
keys (docs/api.md, "The audit log"). The server computes it the same way when it writes one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import NamedTuple

from ._model import AuditEvent, exact_time

EDITED = "edited"
MISSING = "missing event(s) before it"
BROKEN = "chain broken"


class ChainBreak(NamedTuple):
    """Where a chain first fails: the bad event's position in the events given (0 for the
    first), and why (`EDITED`, `MISSING` or `BROKEN`)."""

    position: int
    reason: str


def canonical_bytes(event: AuditEvent) -> bytes:
    """The event's fields as the chain hashes them (every field but the two hashes)."""
    fields = {
        "sequence": event.sequence,
        "time": exact_time(event.time),
        "actor_entry_id": event.actor_entry_id,
        "actor_subject": event.actor_subject,
        "rpc": event.rpc,
        "entry_id": event.entry_id,
        "changes": [[c.field, c.before, c.after] for c in event.changes],
        "code": event.code,
        "peer": event.peer,
        "user_agent": event.user_agent,
    }
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def audit_event_hash(event: AuditEvent, previous_hash: str) -> str:
    """The hash `event` must carry when the event before it carries `previous_hash`."""
    return hashlib.sha256(
        previous_hash.encode("ascii") + b"\n" + canonical_bytes(event)
    ).hexdigest()


def verify_audit_chain(events: Iterable[AuditEvent]) -> ChainBreak | None:
    """None when `events`, the whole log read oldest first from sequence 1, is intact; else
    the first bad event and why:

    - `MISSING` ("missing event(s) before it"): its sequence skips some (a deleted event);
    - `BROKEN` ("chain broken"): its `previous_hash` is not the hash of the event before it
      (an event before it was replaced, or the events are out of order);
    - `EDITED` ("edited"): its fields no longer give its hash.

    Deleting the newest events leaves an intact, shorter chain: compare the last sequence and
    hash with ones noted earlier to see that.
    """
    sequence, previous_hash = 0, ""
    for index, event in enumerate(events):
        if event.sequence > sequence + 1:
            return ChainBreak(index, MISSING)
        if event.previous_hash != previous_hash or event.sequence != sequence + 1:
            return ChainBreak(index, BROKEN)
        if audit_event_hash(event, previous_hash) != event.hash:
            return ChainBreak(index, EDITED)
        sequence, previous_hash = event.sequence, event.hash
    return None
