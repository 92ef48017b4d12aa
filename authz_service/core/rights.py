"""Admin rights: what an entry may do under the reserved plugin `authz`, and who may grant it.

An admin call asks Check for one admin permission with its action (`ADMIN_ACTIONS`), so a right
is a (permission, action) pair. An `authz` restriction grants every pair of its permissions and
its actions; no permissions, or no actions, means all of them, and granting that needs all of
them. No escalation among admins: an admin grants only pairs it holds, and acts on an entry
(update, rotate, revoke) only when it holds every pair that entry holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .model import ADMIN_PLUGIN, Action, AdminPermission, Restriction

AdminRight = tuple[AdminPermission, Action]

# The action each admin permission is asked with (DESIGN section 4).
ADMIN_ACTIONS: Mapping[AdminPermission, Action] = {
    AdminPermission.READ: Action.READ,
    AdminPermission.CREATE: Action.CREATE,
    AdminPermission.UPDATE: Action.UPDATE,
    AdminPermission.REVOKE: Action.DELETE,
    AdminPermission.AUDIT_READ: Action.READ,
}
_PERMISSIONS = {p.value: p for p in AdminPermission}


def admin_rights(restrictions: Iterable[Restriction]) -> frozenset[AdminRight]:
    """The (permission, action) pairs that `restrictions` grant under the plugin `authz`.

    `unrestricted` never covers `authz`, so only the `authz` restriction counts.
    """
    for restriction in restrictions:
        if restriction.plugin != ADMIN_PLUGIN:
            continue
        permissions = (
            [_PERMISSIONS[p] for p in restriction.permissions if p in _PERMISSIONS]
            if restriction.permissions
            else list(AdminPermission)
        )
        actions = restriction.actions or tuple(Action)
        return frozenset((p, a) for p in permissions for a in actions)
    return frozenset()


def missing_rights(held: frozenset[AdminRight], wanted: frozenset[AdminRight]) -> str:
    """The rights in `wanted` that `held` lacks, as words (`authz.entry.update with action
    delete`), or "" when `held` covers them all."""
    lacking: dict[AdminPermission, list[Action]] = {}
    for permission, action in sorted(wanted - held):
        lacking.setdefault(permission, []).append(action)
    parts = []
    for permission, actions in lacking.items():
        if len(actions) == len(Action):
            parts.append(permission.value)
        else:
            names = ", ".join(a.name.lower() for a in actions)
            plural = "s" if len(actions) > 1 else ""
            parts.append(f"{permission.value} with action{plural} {names}")
    return "; ".join(parts)
