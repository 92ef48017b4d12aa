"""`authz-admin`: the bundled admin command line for the authorization service.

Run it as `authz-admin`, `python -m authz_admin` or `python -m authz_admin.cli`; `main(argv)`
returns the exit code. docs/admin-cli.md documents it.
"""

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the admin command line with `argv` (default: `sys.argv[1:]`); return the exit code."""
    # Imported on call, so `python -m authz_admin.cli` does not find the module half-imported.
    from .cli import main as run  # noqa: PLC0415 (see the comment above)

    return run(argv)
