"""`authz-service`: the server's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from . import __version__
from .server import StartupError, serve
from .settings import SettingsError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authz-service", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="start the gRPC server")
    run.add_argument("--listen", help="HOST:PORT to listen on [AUTHZ_LISTEN, 127.0.0.1:50051]")
    run.add_argument("--db", help="SQLite database file [AUTHZ_DB, ./data/authz.db]")
    run.add_argument(
        "--server-key-file",
        help="server key file [AUTHZ_SERVER_KEY_FILE, server.key beside the database]",
    )
    run.add_argument(
        "--bootstrap-token-file",
        help="file holding the bootstrap admin token [or AUTHZ_BOOTSTRAP_TOKEN]",
    )
    run.add_argument(
        "--metrics-listen", help="HOST:PORT for Prometheus /metrics [AUTHZ_METRICS_LISTEN, off]"
    )
    run.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR [AUTHZ_LOG_LEVEL, INFO]")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for unusable settings)."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(
            listen=args.listen,
            db=args.db,
            server_key_file=args.server_key_file,
            bootstrap_token_file=args.bootstrap_token_file,
            log_level=args.log_level,
            environ=os.environ,
            metrics_listen=args.metrics_listen,
        )
    except SettingsError as exc:
        print(f"authz-service: {exc}", file=sys.stderr)  # noqa: T201 (the CLI's own voice)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        print(f"authz-service: {exc}", file=sys.stderr)  # noqa: T201 (the CLI's own voice)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
