"""What the command line shows: aligned tables for people, JSON with stable keys for scripts.

Results go to stdout; warnings and errors to stderr. Timestamps are ISO 8601 in UTC. Nothing
here prints a token except `token` and `entry(..., token=...)`, which the commands call only
for `gen-token` and `--generate`. Each result is flushed as it is written, so a stdout that
cannot take it (closed, a full disk, a closed pipe) is an OutputError there and then.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import grpc

from authz_client import AuditEvent, CheckResult, Entry

from ._failures import CommandError, OutputError

LIST_COLUMNS = ("ID", "SUBJECT", "STATE", "RESTRICTIONS", "EXPIRES", "LAST USED")
# Shown only when some entry listed has a previous token still in its grace.
PREVIOUS_COLUMN = "PREVIOUS TOKEN UNTIL"
AUDIT_COLUMNS = ("SEQ", "TIME", "ACTOR", "RPC", "ENTRY", "OUTCOME", "PEER", "CHANGES")
NONE = "-"
# The actor of the server's own writes (the bootstrap), which no admin made.
SERVER_ACTOR = "(server)"
_STATUS_NAMES = {status.value[0]: status.name for status in grpc.StatusCode}


def when(moment: datetime | None, empty: str = NONE) -> str:
    """A timestamp for people: ISO 8601 in UTC to the second, or `empty`."""
    if moment is None:
        return empty
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def access(entry: Entry) -> list[str]:
    """The entry's access in the compact `--allow` form, one item per restriction."""
    items = [str(r) for r in entry.restrictions]
    return ["UNRESTRICTED", *items] if entry.unrestricted else items


def previous_until(entry: Entry) -> datetime | None:
    """Until when the token a rotation replaced still works: never past a revoke or expiry,
    which end both tokens."""
    return entry.previous_token_expire_time if entry.state == "active" else None


def outcome(code: int) -> str:
    """A google.rpc.Code as its name: OK, PERMISSION_DENIED."""
    return _STATUS_NAMES.get(code, f"code {code}")


def printable(text: str) -> str:
    """`text` with control characters escaped, so a value cannot break a table's lines."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def changes(event: AuditEvent) -> list[str]:
    """Each field the event changed, `field: before -> after` (values as the server wrote
    them, JSON), or none."""
    return [printable(f"{c.field}: {c.before} -> {c.after}") for c in event.changes]


def aligned(rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned columns two spaces apart, without trailing blanks."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in rows
    )


def check_dict(result: CheckResult) -> dict[str, Any]:
    """Check's answer as JSON-ready data with stable keys."""
    return {
        "decision": "ALLOW" if result.allowed else "DENY",
        "allowed": result.allowed,
        "http_status": result.http_status,
        "reason": result.reason,
        "subject": result.subject,
        "entry_id": result.entry_id,
    }


class Output:
    """Writes results in the chosen format to `stdout`, and messages to `stderr`."""

    def __init__(self, stdout: TextIO | None, stderr: TextIO | None, *, as_json: bool) -> None:
        # None is a closed stream: Python's sys.stdout when the shell closed it (`>&-`).
        self.stdout = stdout
        self.stderr = stderr
        self.as_json = as_json

    def ready(self) -> None:
        """OutputError now if stdout is closed: asked before a call whose result (a generated
        token) can be shown only once."""
        self._open_stdout()

    def entry(self, entry: Entry, token: str | None = None) -> None:
        """One entry; with `token`, the just generated token too (its only showing)."""
        if self.as_json:
            data = entry.to_dict()
            if token is not None:
                data["token"] = token
            self.document(data)
            return
        items = access(entry) or [NONE]
        rows = [
            ("id", entry.id),
            ("subject", entry.subject),
            ("description", entry.description or NONE),
            ("state", entry.state),
            ("access", items[0]),
            *(("", item) for item in items[1:]),
            ("created", when(entry.create_time)),
            ("updated", when(entry.update_time)),
            ("expires", when(entry.expire_time, "never")),
            ("last used", when(entry.last_used_time, "never")),
        ]
        if (previous := previous_until(entry)) is not None:
            rows.append(("previous token", f"works until {when(previous)}"))
        if entry.revoke_time is not None:
            rows += [("revoked", when(entry.revoke_time)), ("reason", entry.revoke_reason or NONE)]
        rows.append(("etag", entry.etag))
        if token is not None:
            rows.append(("token", token))
        self.table(rows)

    def entries(self, entries: Sequence[Entry]) -> None:
        """A list of entries: a table, or a JSON array."""
        if self.as_json:
            self.document([e.to_dict() for e in entries])
            return
        previous = any(previous_until(e) is not None for e in entries)
        rows = [(*LIST_COLUMNS, *((PREVIOUS_COLUMN,) if previous else ()))] + [
            (
                e.id,
                e.subject,
                e.state,
                " ".join(access(e)) or NONE,
                when(e.expire_time, "never"),
                when(e.last_used_time, "never"),
                *((when(previous_until(e)),) if previous else ()),
            )
            for e in entries
        ]
        self.table(rows)

    def audit_events(self, events: Sequence[AuditEvent]) -> None:
        """Audit events, oldest first: a table with a row per changed field, or a JSON array
        of every field of each."""
        if self.as_json:
            self.document([e.to_dict() for e in events])
            return
        rows: list[tuple[str, ...]] = [AUDIT_COLUMNS]
        for event in events:
            changed = changes(event) or [NONE]
            rows.append(
                (
                    str(event.sequence),
                    when(event.time),
                    printable(event.actor_subject) or SERVER_ACTOR,
                    printable(event.rpc),
                    event.entry_id or NONE,
                    outcome(event.code),
                    printable(event.peer) or NONE,
                    changed[0],
                )
            )
            rows += [("", "", "", "", "", "", "", change) for change in changed[1:]]
        self.table(rows)

    def chain_intact(self, count: int, newest: AuditEvent | None) -> None:
        """`audit --verify`'s answer when the chain holds: how many events, and the newest
        one's sequence and hash (which an operator can note to see later truncation)."""
        if self.as_json:
            self.document(
                {
                    "intact": True,
                    "events": count,
                    "last_sequence": newest.sequence if newest else 0,
                    "last_hash": newest.hash if newest else "",
                }
            )
            return
        lines = f"{count} event{'' if count == 1 else 's'}, chain intact\n"
        if newest is not None:
            lines += f"newest: event {newest.sequence} ({when(newest.time)}), hash {newest.hash}\n"
        self._write(lines)

    def check(self, result: CheckResult) -> None:
        """Check's answer: decision, HTTP status, reason, and who on ALLOW."""
        if self.as_json:
            self.document(check_dict(result))
        elif result.allowed:
            self.line(
                f"ALLOW  {result.http_status}  subject {result.subject} (entry {result.entry_id})"
            )
        else:
            self.line(f"DENY  {result.http_status}  {result.reason}")

    def token(self, token: str) -> None:
        """A token from `gen-token`."""
        if self.as_json:
            self.document({"token": token})
        else:
            self.line(token)

    def table(self, rows: Sequence[Sequence[str]]) -> None:
        """Rows as a table for people, left-aligned columns two spaces apart."""
        self._write(aligned(rows))

    def line(self, text: str) -> None:
        """One line of a result, for people: `text` without its newline."""
        self._write(text + "\n")

    def document(self, data: Any) -> None:
        """A result as one JSON document, for scripts: `data` is JSON-ready."""
        self._write(json.dumps(data, indent=2) + "\n")

    def note(self, message: str) -> None:
        """A line for the person at the terminal on stderr, beside the result on stdout."""
        self._say(f"authz-admin: {message}\n")

    def warn(self, message: str) -> None:
        """A warning on stderr."""
        self._say(f"authz-admin: warning: {message}\n")

    def error(self, failure: CommandError) -> None:
        """An error on stderr: what went wrong and what to do next, then any details."""
        self._say(
            "".join(
                [f"authz-admin: error: {failure.message}\n"]
                + [f"  {detail}\n" for detail in failure.details]
            )
        )

    def _open_stdout(self) -> TextIO:
        if self.stdout is None or self.stdout.closed:
            raise OutputError("cannot write to stdout: it is closed")
        return self.stdout

    def _write(self, text: str) -> None:
        stdout = self._open_stdout()
        try:
            stdout.write(text)
            stdout.flush()
        except (OSError, ValueError) as error:  # ValueError: the stream was closed
            reason = error.strerror if isinstance(error, OSError) else "it is closed"
            raise OutputError(f"cannot write to stdout: {reason or error}") from None

    def _say(self, text: str) -> None:
        # A stderr that cannot take a message leaves nowhere to say so: the exit code tells.
        if self.stderr is None:
            return
        try:
            self.stderr.write(text)
            self.stderr.flush()
        except (OSError, ValueError):
            pass
