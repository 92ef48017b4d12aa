"""The pure core: entries, restrictions, the rules, the Check decision and the errors.

It imports only the standard library: no grpc, protobuf, sqlite or argon2.
"""

from .decision import Decision, Policy, Reason, bearer_token, decide
from .errors import (
    Aborted,
    AlreadyExists,
    AuthzError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from .model import ADMIN_PLUGIN, Action, AdminPermission, Entry, Restriction, State

__all__ = [
    "ADMIN_PLUGIN",
    "Aborted",
    "Action",
    "AdminPermission",
    "AlreadyExists",
    "AuthzError",
    "Decision",
    "Entry",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "Policy",
    "Reason",
    "Restriction",
    "State",
    "Unauthenticated",
    "Unavailable",
    "bearer_token",
    "decide",
]
