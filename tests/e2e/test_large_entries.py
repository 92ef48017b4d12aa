"""Entries of the largest valid size, listed through the real server and the real CLI: a page
is bounded by bytes too, so it always fits a default client's 4 MiB message limit."""

from __future__ import annotations

from pathlib import Path

from admin_cli import AdminCli
from authz.v1 import authz_pb2 as pb
from server_process import ADMIN_METADATA, ServerProcess

ENTRIES = 12


def maximal_restrictions(n: int) -> list[pb.AccessRestriction]:
    """64 restrictions of 64 permissions of 128 characters: about 530 KB."""
    return [
        pb.AccessRestriction(
            plugin=f"p{n}-{r}".ljust(64, "x"),
            permissions=[f"perm.n{n}r{r}p{p}".ljust(128, "x") for p in range(64)],
        )
        for r in range(64)
    ]


def test_a_dozen_maximal_entries_list_and_revoke_by_subject(
    server: ServerProcess, tmp_path: Path
) -> None:
    for n in range(ENTRIES):
        request = pb.CreateEntryRequest(
            subject=f"large-{n}",
            token=f"large-entry-token-{n:04d}",
            access_restrictions=maximal_restrictions(n),
        )
        assert request.ByteSize() > 500_000
        server.admin.CreateEntry(request, metadata=ADMIN_METADATA, timeout=30)

    first = server.admin.ListEntries(pb.ListEntriesRequest(), metadata=ADMIN_METADATA)
    assert first.next_page_token, "a dozen maximal entries must not fit one page"
    assert first.ByteSize() < 2 * 1024 * 1024

    cli = AdminCli(server.target, tmp_path)
    listed = cli.ok("list", "--json").json()
    assert [e["subject"] for e in listed] == [
        "bootstrap-admin",
        *(f"large-{n}" for n in range(ENTRIES)),
    ]
    revoked = cli.ok("revoke", f"large-{ENTRIES - 1}", "--json").json()
    assert revoked["state"] == "revoked"
