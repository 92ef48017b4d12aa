"""Naming an entry on the command line: by its id, or by its subject.

A subject is resolved by listing entries, revoked ones included: the one unrevoked entry with
that subject wins (subjects are unique among unrevoked entries); with none, a single revoked
entry with it is taken, and several are ambiguous.
"""

from __future__ import annotations

import uuid

from authz_client import AuthzClient, Entry, NotFound

from ._failures import EntryNotFound


def looks_like_id(name: str) -> bool:
    """Whether `name` has the form of an entry id (a UUID)."""
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True


def find_entry(client: AuthzClient, name: str) -> Entry:
    """The entry whose id or subject is `name`; EntryNotFound if none or several."""
    if looks_like_id(name):
        try:
            return client.get_entry(name)
        except NotFound:
            pass  # a subject may look like an id too
    return by_subject(list(client.iter_entries(include_revoked=True)), name)


def entry_id_of(client: AuthzClient, name: str) -> str:
    """The id `name` stands for: itself when it has an id's form (so naming an entry by id
    needs no read of it), else the id of the entry with that subject, as `find_entry` finds it."""
    if looks_like_id(name):
        return name
    return by_subject(list(client.iter_entries(include_revoked=True)), name).id


def by_subject(entries: list[Entry], name: str) -> Entry:
    """The entry named `name` among `entries`, as the module docstring says."""
    named = [e for e in entries if name in (e.id, e.subject)]
    by_id = [e for e in named if e.id == name]
    if by_id:
        return by_id[0]
    unrevoked = [e for e in named if e.state != "revoked"]
    candidates = unrevoked or named
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise EntryNotFound(
            f"no entry has the id or subject {name!r}: `authz-admin list --all` shows every entry"
        )
    kind = "unrevoked" if unrevoked else "revoked"
    raise EntryNotFound(
        f"{len(candidates)} {kind} entries have the subject {name!r}: name one by its id",
        *(f"{e.id}  {e.state}" for e in candidates),
    )
