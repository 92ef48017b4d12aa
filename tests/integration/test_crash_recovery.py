"""A server killed with SIGKILL keeps every write it acknowledged.

This covers a process crash; the page cache survives it. That the writes also reach the disk
before they are acknowledged (power loss) is shown by the store's pragmas, tested in
test_sqlite_durability.py.
"""

from __future__ import annotations

import signal
from pathlib import Path

from authz.v1 import authz_pb2
from server_process import ADMIN_METADATA, ServerProcess


def test_every_acknowledged_create_survives_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "authz.db"
    server = ServerProcess(db)
    tokens = {f"crash-{n}": f"crash-token-{n:04d}-abcdefgh" for n in range(15)}
    acknowledged = {}
    for subject, token in tokens.items():
        entry = server.admin.CreateEntry(
            authz_pb2.CreateEntryRequest(
                subject=subject,
                token=token,
                access_restrictions=[authz_pb2.AccessRestriction(plugin="catalog")],
            ),
            metadata=ADMIN_METADATA,
        )
        acknowledged[subject] = entry.id
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL

    restarted = ServerProcess(db)
    try:
        listed = restarted.admin.ListEntries(
            authz_pb2.ListEntriesRequest(page_size=100), metadata=ADMIN_METADATA
        )
        found = {e.subject: e.id for e in listed.entries}
        assert {s: found.get(s) for s in acknowledged} == acknowledged
        # The server key survived too: the tokens still authenticate after the crash.
        answer = restarted.authz.Check(
            authz_pb2.CheckRequest(token=tokens["crash-7"], plugin="catalog")
        )
        assert answer.decision == authz_pb2.ALLOW
        assert answer.subject == "crash-7"
    finally:
        restarted.stop()
