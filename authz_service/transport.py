"""How the server keeps and sheds its HTTP/2 connections: the grpc server options, and the
process's descriptor limit.

Every connection holds a file descriptor. Without limits, grpc keeps a connection open as long
as its peer does: idle ones, and ones holding a call that never finishes, until the process runs
out of descriptors and new clients wait at accept. The figures below shed what nobody uses,
bound how long any connection lives, and suit Envoy, whose ext_authz cluster keeps one long-lived
HTTP/2 connection per worker, answers GOAWAY by opening a new one, and keeps its own requests
within ext_authz's timeout (0.5 s in deploy/envoy.yaml).
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Mapping

log = logging.getLogger("authz_service")

MINUTE_MS = 60_000

SERVER_OPTIONS: Mapping[str, int] = {
    # A second server on a taken port must fail, not share it silently.
    "grpc.so_reuseport": 0,
    # A connection with no call for a minute gets a GOAWAY and is closed: an Envoy with any
    # traffic never idles that long, and a quiet one reconnects on its next check (one TCP or
    # TLS handshake, well within ext_authz's timeout). Forgotten or idle-held connections give
    # back their descriptor within a minute.
    "grpc.max_connection_idle_ms": MINUTE_MS,
    # Any connection, busy or stuck, gets a GOAWAY after 5 minutes (grpc adds +-10% jitter, so
    # Envoy's workers do not reconnect in step). A GOAWAY is graceful: Envoy opens a new
    # connection for new checks while the old one's calls finish. It also rebalances clients
    # over servers added since they connected.
    "grpc.max_connection_age_ms": 5 * MINUTE_MS,
    # After that GOAWAY, calls in flight get 30 s to finish (a Check takes microseconds to
    # milliseconds; a health Watch is ended and opened again by its client); then the
    # connection is closed whatever it holds. So a connection holding a call that never
    # finishes lives at most about 6 minutes.
    "grpc.max_connection_age_grace_ms": 30_000,
    # The server pings a connection it has heard nothing from for a minute, and closes it when
    # no ack comes within 20 s: a peer that vanished without closing (host gone, network cut)
    # frees its descriptor in 80 s rather than after TCP's own timeouts (minutes to hours).
    "grpc.keepalive_time_ms": MINUTE_MS,
    "grpc.keepalive_timeout_ms": 20_000,
    # Pings are allowed on a connection without calls, both ways: the server's own keepalive
    # above, and an Envoy configured with `connection_keepalive` (it pings whether or not
    # checks are in flight). Without this, grpc allows a client one such ping per 2 hours.
    "grpc.keepalive_permit_without_calls": 1,
    # A client may ping at most every 10 s while no data flows (Envoy's connection_keepalive
    # interval should be 15 s or more: it jitters by 15%); the third ping sooner than that
    # closes the connection (GOAWAY "too_many_pings"), so a ping flood costs its sender the
    # connection.
    "grpc.http2.min_ping_interval_without_data_ms": 10_000,
    "grpc.http2.max_ping_strikes": 2,
    # At most 100 calls at once on one connection (HTTP/2's recommended minimum, RFC 9113
    # 6.5.2): the benchmark's load generators open 16 per connection (h2load -m 16, loadgen.mjs
    # --streams 16), and Envoy's pool opens another connection when one is full. One
    # connection cannot hold thousands of unfinished calls.
    "grpc.max_concurrent_streams": 100,
    # A connection must finish its TLS and HTTP/2 handshake within 20 s (grpc's default is
    # 120 s): one opened and left silent holds a descriptor no longer than that.
    "grpc.server_handshake_timeout_ms": 20_000,
    # A request of at most 1 MiB (grpc's default is 4 MiB): the largest valid one, a
    # CreateEntry of 64 restrictions of 64 permissions, is about 530 KB, and Envoy's check
    # carries headers only (deploy/envoy.yaml sends no request body). Parsing one costs the
    # event loop a few milliseconds at most; a larger one is RESOURCE_EXHAUSTED unread.
    "grpc.max_receive_message_length": 1 << 20,
}


def server_options(overrides: Mapping[str, int] | None = None) -> list[tuple[str, int]]:
    """SERVER_OPTIONS as grpc takes them, with `overrides` (tests shorten the times); a name
    that is not among them is refused, so a misspelt option cannot pass unnoticed."""
    unknown = set(overrides or {}) - set(SERVER_OPTIONS)
    if unknown:
        raise ValueError(f"not a server option here: {', '.join(sorted(unknown))}")
    return list({**SERVER_OPTIONS, **(overrides or {})}.items())


def raise_descriptor_limit() -> int:
    """Raise the soft limit of open files (RLIMIT_NOFILE) to the hard limit, so connections run
    out of descriptors as late as the system allows; returns the soft limit now in force.

    Never fails: where the limit cannot be raised, the one in force is kept (and logged).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard in (soft, resource.RLIM_INFINITY):
        # Nothing to raise; or no number to raise to (an unlimited hard limit is not a soft
        # one setrlimit takes everywhere: macOS refuses it).
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft
    return hard
