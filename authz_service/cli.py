"""`authz-service`: the server's command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from .healthcheck import DEFAULT_TIMEOUT as DEFAULT_PROBE_TIMEOUT
from .healthcheck import ProbeError, load_probe
from .logs import configure_logging
from .server import StartupError, serve
from .settings import SettingsError, load_settings
from .workers import supervise


class _Parser(argparse.ArgumentParser):
    """argparse, with the exit code of a usage error its own: 2 for `serve`."""

    usage_exit = 2

    def error(self, message: str) -> NoReturn:
        """Print the usage and `message`, and exit with `usage_exit`."""
        self.print_usage(sys.stderr)
        self.exit(self.usage_exit, f"{self.prog}: error: {message}\n")


class _ProbeParser(_Parser):
    """For `healthcheck`: Docker reserves exit code 2, so a usage error is 1 (unhealthy)."""

    usage_exit = 1


def _parser(probing: bool = False) -> argparse.ArgumentParser:
    kind = _ProbeParser if probing else _Parser
    parser = kind(prog="authz-service", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=kind)
    run = commands.add_parser("serve", help="start the gRPC server")
    run.add_argument("--listen", help="HOST:PORT to listen on [AUTHZ_LISTEN, 127.0.0.1:50051]")
    run.add_argument(
        "--db", help="SQLite database file, or a postgresql:// URL [AUTHZ_DB, ./data/authz.db]"
    )
    run.add_argument(
        "--workers",
        help="processes serving one port, sharing the database [AUTHZ_WORKERS, 1]",
    )
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
    run.add_argument(
        "--admin-listen",
        help="HOST:PORT serving AdminService alone [AUTHZ_ADMIN_LISTEN, off: on --listen]",
    )
    run.add_argument("--tls-cert", help="PEM certificate chain: serve TLS [AUTHZ_TLS_CERT, off]")
    run.add_argument("--tls-key", help="PEM private key of --tls-cert [AUTHZ_TLS_KEY]")
    run.add_argument(
        "--tls-client-ca",
        help="PEM CA that client certificates must chain to: mTLS [AUTHZ_TLS_CLIENT_CA, off]",
    )
    run.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR [AUTHZ_LOG_LEVEL, INFO]")
    run.add_argument(
        "--log-format",
        help="json, text, or auto: text on a terminal, else JSON [AUTHZ_LOG_FORMAT, auto]",
    )
    probe = commands.add_parser(
        "healthcheck",
        help="ask the server's health service whether it is SERVING (exit 0) or not (exit 1)",
        description="Ask grpc.health.v1 at the server that AUTHZ_LISTEN names, with the TLS "
        "settings `serve` uses; for a container's HEALTHCHECK.",
    )
    probe.add_argument(
        "--target", help="HOST:PORT to ask [AUTHZ_LISTEN, wildcard host as loopback]"
    )
    probe.add_argument("--service", default="", help="a service name ['': the whole server]")
    probe.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_PROBE_TIMEOUT,
        help=f"seconds to wait for the answer [{DEFAULT_PROBE_TIMEOUT:g}]",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for unusable settings)."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(probing=bool(argv) and argv[0] == "healthcheck").parse_args(argv)
    if args.command == "healthcheck":
        return _healthcheck(args)
    try:
        settings = load_settings(
            listen=args.listen,
            db=args.db,
            server_key_file=args.server_key_file,
            bootstrap_token_file=args.bootstrap_token_file,
            log_level=args.log_level,
            environ=os.environ,
            metrics_listen=args.metrics_listen,
            admin_listen=args.admin_listen,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_client_ca=args.tls_client_ca,
            log_format=args.log_format,
            workers=args.workers,
        )
    except SettingsError as exc:
        print(f"authz-service: {exc}", file=sys.stderr)  # noqa: T201 (the CLI's own voice)
        return 2
    configure_logging(settings.log_level, settings.log_format, sys.stderr)
    try:
        if settings.workers > 1:
            return supervise(settings)
        asyncio.run(serve(settings))
    except StartupError as exc:
        print(f"authz-service: {exc}", file=sys.stderr)  # noqa: T201 (the CLI's own voice)
        return 2
    return 0


def _healthcheck(args: argparse.Namespace) -> int:
    """0 when the server answers SERVING; 1 otherwise, with one line saying what it said."""
    try:
        probe = load_probe(
            target=args.target, service=args.service, timeout=args.timeout, environ=os.environ
        )
    except ProbeError as exc:
        print(f"authz-service healthcheck: {exc}", file=sys.stderr)  # noqa: T201 (the CLI's own voice)
        return 1
    serving, status = probe.ask()
    print(f"{probe.target}: {status}", file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
