"""Client library for the authorization service: `check` for backend services, the admin
calls for tools, and server interceptors that guard a Python gRPC backend.

    from authz_client import AuthzClient

    with AuthzClient("127.0.0.1:50051") as authz:
        result = authz.check(request_authorization_header, "catalog", "catalog.entity.read", "read")
        if not result.allowed:
            ...  # answer result.http_status (401 or 403)

Several replicas: `AuthzClient(["authz-a:50051", "authz-b:50051"])`, or one name that resolves
to all of them (`dns:///authz:50051`); a call that finds one unavailable asks the next, within
its timeout (docs/client-library.md, "Several replicas").

Against a server that serves TLS, pass `credentials=tls_credentials(ca_file="ca.pem")` (with
`cert_file` and `key_file` too under mTLS).
"""

from ._audit import ChainBreak, verify_audit_chain
from ._errors import (
    Aborted,
    AlreadyExists,
    AuthzClientError,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from ._model import ACTIONS, AuditEvent, CheckResult, Entry, FieldChange, Restriction
from ._requests import KEEP
from ._tls import tls_credentials
from .aio import AsyncAuthzClient
from .client import AuthzClient
from .interceptor import (
    AsyncAuthzServerInterceptor,
    AuthzServerInterceptor,
    MethodRule,
    current_identity,
)

__all__ = [
    "ACTIONS",
    "KEEP",
    "Aborted",
    "AlreadyExists",
    "AsyncAuthzClient",
    "AsyncAuthzServerInterceptor",
    "AuditEvent",
    "AuthzClient",
    "AuthzClientError",
    "AuthzServerInterceptor",
    "ChainBreak",
    "CheckResult",
    "DeadlineExceeded",
    "Entry",
    "FailedPrecondition",
    "FieldChange",
    "FieldViolation",
    "InvalidArgument",
    "MethodRule",
    "NotFound",
    "PermissionDenied",
    "Restriction",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "current_identity",
    "tls_credentials",
    "verify_audit_chain",
]
