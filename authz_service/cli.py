"""`authz-service`: the server's command line."""

from __future__ import annotations

import os

# grpc reads GRPC_VERBOSITY once, when it is first imported (through the modules below): its
# own INFO lines, such as a refused TLS handshake, stay out of the log unless asked for.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

from . import __version__
from .adapters.argon2_hasher import MEMORY_COST_KIB, TIME_COST
from .healthcheck import DEFAULT_TIMEOUT as DEFAULT_PROBE_TIMEOUT
from .healthcheck import ProbeError, load_probe
from .logs import configure_logging
from .server import StartupError, serve
from .settings import DEFAULT_REPLICA_LEASE, Settings, SettingsError, load_settings
from .workers import supervise

_SERVE = """\
Start the gRPC server: Check (authz.v1.AuthzService), AdminService, health and reflection,
over one SQLite file or a PostgreSQL database. Each flag has an environment variable (in
brackets, with the default); a flag wins over its variable. docs/settings.md has them all."""

_SERVE_ENVIRONMENT = f"""\
settings only the environment gives:
  AUTHZ_BOOTSTRAP_TOKEN       the bootstrap admin token itself (--bootstrap-token-file wins)
  AUTHZ_ARGON2_TIME_COST      argon2 passes for new verifiers [{TIME_COST}]
  AUTHZ_ARGON2_MEMORY_KIB     argon2 memory for new verifiers, in KiB [{MEMORY_COST_KIB}]
  AUTHZ_DB_PASSWORD_FILE      with PostgreSQL: the file holding the database password
  AUTHZ_REPLICA_LEASE         with PostgreSQL: seconds a replica keeps answering from its
                              cache after losing the database [{DEFAULT_REPLICA_LEASE:g}]
  GRPC_VERBOSITY              grpc's own log lines [ERROR]

Unusable settings end the process with one line on stderr and exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with the exit code of a usage error its own: 2 for `serve`; a subcommand's
    unknown argument is that subcommand's usage error."""

    usage_exit = 2

    def error(self, message: str) -> NoReturn:
        """Print the usage and `message`, and exit with `usage_exit`."""
        self.print_usage(sys.stderr)
        self.exit(self.usage_exit, f"{self.prog}: error: {message}\n")

    def parse_known_args(  # type: ignore[override]  # narrower than argparse's overloads
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse `args`; anything left over stops with this parser's usage."""
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


class _ProbeParser(_Parser):
    """For `healthcheck`: Docker reserves exit code 2, so a usage error is 1 (unhealthy)."""

    usage_exit = 1


def _parser(probing: bool = False) -> argparse.ArgumentParser:
    kind = _ProbeParser if probing else _Parser
    # No abbreviations: `--liste` is a typo to report, not a flag to guess.
    parser = kind(prog="authz-service", description=__doc__, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=kind)
    run = commands.add_parser(
        "serve",
        help="start the gRPC server",
        description=_SERVE,
        epilog=_SERVE_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
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
        help="file holding the bootstrap admin token [AUTHZ_BOOTSTRAP_TOKEN_FILE, "
        "or AUTHZ_BOOTSTRAP_TOKEN]",
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
        allow_abbrev=False,
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
    if problem := _database_directory_problem(settings):
        print(f"authz-service: {problem}", file=sys.stderr)  # noqa: T201 (the CLI's own voice)
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


def _database_directory_problem(settings: Settings) -> str | None:
    """Why the SQLite file's directory cannot be made, or None. Asked first, since the
    server key is created there before the database: its error would name the key file."""
    if settings.postgresql:
        return None
    directory = settings.db_path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        return f"AUTHZ_DB/--db: cannot create {directory}, the database's directory: {exc.strerror}"
    return None


def _healthcheck(args: argparse.Namespace) -> int:
    """0 when the server answers SERVING; 1 otherwise, with one line saying what it said.

    The exit code is the answer even when the line cannot be written (a full disk, a closed
    pipe): that failure gets a line on stderr of its own.
    """
    try:
        probe = load_probe(
            target=args.target, service=args.service, timeout=args.timeout, environ=os.environ
        )
    except ProbeError as exc:
        print(f"authz-service healthcheck: {exc}", file=sys.stderr)  # noqa: T201 (the CLI's own voice)
        return 1
    serving, status = probe.ask()
    line = f"{probe.target}: {status}\n"
    stream = sys.stdout if serving else sys.stderr
    try:
        if stream is not None:
            stream.write(line)
            stream.flush()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is closed"
        _discard(stream)
        said = "SERVING" if serving else status
        print(  # noqa: T201 (the CLI's own voice)
            f"authz-service healthcheck: cannot write the answer ({said}): {reason}",
            file=sys.stderr,
        )
    return 0 if serving else 1


def _discard(stream: TextIO) -> None:
    """Point `stream`'s file at /dev/null, so the interpreter's last flush of what could not
    be written fails no more (it would print "Exception ignored")."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # closed, or not a file
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
