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


# At most this many bad fields are reported: a request with thousands of them must not build a
# status trailer too large for a default client (8 KiB of metadata) or cost more to report.
MAX_REPORTED_VIOLATIONS = 10


class InvalidArgument(AuthzError):
    """A request field breaks a rule; `violations` names the first bad fields (at most
    MAX_REPORTED_VIOLATIONS), and `omitted` counts the others."""

    def __init__(self, violations: Iterable[FieldViolation], omitted: int = 0) -> None:
        found = tuple(violations)
        self.violations = found[:MAX_REPORTED_VIOLATIONS]
        self.omitted = omitted + len(found) - len(self.violations)
        message = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        if self.omitted:
            message += f"; and {self.omitted} more"
        super().__init__(message)


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
