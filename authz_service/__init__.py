"""authz-service: a gRPC service that decides whether a static external access token may act."""

__version__ = "0.1.0"

__all__ = ["__version__"]
