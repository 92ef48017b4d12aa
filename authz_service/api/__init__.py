"""The gRPC edge: servicers, message translation and the error-to-status mapping."""

from .servicers import AdminServicer, AuthzServicer

__all__ = ["AdminServicer", "AuthzServicer"]
