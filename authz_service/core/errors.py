"""The service's errors: one small hierarchy whose root is never raised.

The gRPC layer maps each class to a status code in exactly one place
(`authz_service.api._status`). No message here ever carries a token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: its path (`access_restrictions[1].plugin`) and why."""

    field: str
    description: str


class AuthzError(Exception):
    """Root of the service's errors; never raised itself."""


class InvalidArgument(AuthzError):
    """A request field breaks a rule; `violations` names every bad field."""

    def __init__(self, violations: Iterable[FieldViolation]) -> None:
        self.violations = tuple(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))


class NotFound(AuthzError):
    """The named entry does not exist."""


class AlreadyExists(AuthzError):
    """A subject or a token is already taken by another entry."""


class FailedPrecondition(AuthzError):
    """The entry is not in a state that allows the call (e.g. updating a revoked entry)."""


class Aborted(AuthzError):
    """The entry changed since the caller read it (stale etag); read it again and retry."""


class Unauthenticated(AuthzError):
    """The caller presented no token, or one that matches no active entry."""


class PermissionDenied(AuthzError):
    """The caller's token is valid but lacks the permission the call needs."""


class Unavailable(AuthzError):
    """Storage cannot serve the call right now (disk full, database locked); retry later."""


def invalid(field: str, description: str) -> InvalidArgument:
    """Shorthand for an InvalidArgument with a single field violation."""
    return InvalidArgument([FieldViolation(field, description)])
