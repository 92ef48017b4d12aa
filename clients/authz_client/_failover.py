"""Several replicas: the channel policy, which target a call asks next, and each attempt's share
of the caller's timeout. Shared by the sync and async clients.

Inside one channel grpc does the work: `round_robin` over every address a target resolves to,
client-side health checking (`grpc.health.v1` Watch) that leaves NOT_SERVING addresses out,
and a retry policy for UNAVAILABLE. Across targets (one channel each, since a channel has one
target) the client walks them itself: `Attempts`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence

import grpc

from ._errors import AuthzClientError, DeadlineExceeded, Unavailable

# Calls that may be repeated, on the same target or on another: Check and the reads, and
# RevokeEntry (revoking again changes nothing). Create and Update are not: one that reached a
# server may have committed.
REPEATABLE = frozenset({"Check", "GetEntry", "ListAuditEvents", "ListEntries", "RevokeEntry"})

_SERVICE = {"Check": "authz.v1.AuthzService"}
_ADMIN_SERVICE = "authz.v1.AdminService"

SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        # "" is the whole server's status, which every listener of authz-service reports.
        "healthCheckConfig": {"serviceName": ""},
        "methodConfig": [
            {
                "name": [
                    {"service": _SERVICE.get(method, _ADMIN_SERVICE), "method": method}
                    for method in sorted(REPEATABLE)
                ],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)
_OPTIONS = (
    ("grpc.enable_retries", 1),
    ("grpc.service_config", SERVICE_CONFIG),
    # The policy above is the client's own: a DNS TXT record does not replace it.
    ("grpc.service_config_disable_resolution", 1),
)
# With several targets, standby channels stay connected and health-watched (grpc would idle a
# channel after 30 min without calls), so failing over costs no connection set-up.
_NEVER_IDLE = (("grpc.client_idle_timeout_ms", 2**31 - 1),)

# The order targets are asked in: connected ones first, ones that failed last.
_RANK = {
    grpc.ChannelConnectivity.READY: 0,
    grpc.ChannelConnectivity.IDLE: 1,
    grpc.ChannelConnectivity.CONNECTING: 2,
    grpc.ChannelConnectivity.TRANSIENT_FAILURE: 3,
    grpc.ChannelConnectivity.SHUTDOWN: 4,
}

_FAILS_OVER = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def target_list(target: str | Sequence[str]) -> tuple[str, ...]:
    """The targets a client was given, each once, in the order given."""
    targets = (target,) if isinstance(target, str) else tuple(dict.fromkeys(target))
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError("give at least one target, each a non-empty string such as host:port")
    return targets


def channel_options(several: bool) -> list[tuple[str, int | str]]:
    """The options of each target's channel (`several`: the client has more than one)."""
    return [*_OPTIONS, *(_NEVER_IDLE if several else ())]


def service_of(method: str) -> str:
    """Which stub serves `method`: "authz" (Check) or "admin"."""
    return "authz" if method in _SERVICE else "admin"


def ask_order(states: Sequence[grpc.ChannelConnectivity | None], start: int) -> list[int]:
    """The indexes of the targets in the order one call asks them: by channel state (ready
    first), and among equals in turn from `start`, so calls spread over the replicas."""
    count = len(states)
    return sorted(range(count), key=lambda i: (_rank(states[i]), (i - start) % count))


def _rank(state: grpc.ChannelConnectivity | None) -> int:
    return _RANK[grpc.ChannelConnectivity.IDLE if state is None else state]


class Attempts:
    """One call's walk over its targets within the caller's timeout.

    Iterating gives (target index, seconds this attempt may take): the time left divided by
    the targets not yet asked, so a target that hangs leaves the others their share and the
    last one gets all that is left. The walk never runs past `timeout` after it began.
    """

    def __init__(self, order: Sequence[int], timeout: float) -> None:
        self._order = order
        self._deadline = time.monotonic() + timeout
        self._timeout = timeout
        self.tried = 0
        self._last: AuthzClientError | None = None

    def __iter__(self) -> Iterator[tuple[int, float]]:
        for position, index in enumerate(self._order):
            left = self.left()
            if left <= 0:
                return
            self.tried += 1
            yield index, left / (len(self._order) - position)

    def left(self) -> float:
        """Seconds left of the caller's timeout."""
        return max(self._deadline - time.monotonic(), 0.0)

    def fails_over(self, error: AuthzClientError) -> bool:
        """Whether another target may be asked after this error (UNAVAILABLE, or this
        attempt's share of the time ran out); it is remembered for `exhausted`."""
        self._last = error
        return error.code in _FAILS_OVER

    def not_ready(self) -> None:
        """The target did not connect (or was not healthy) within its share: nothing was sent."""
        self._last = Unavailable("the target did not connect or was not serving; nothing was sent")

    def exhausted(self) -> AuthzClientError:
        """The error to raise once no target answered: the last one's, naming how many
        targets were tried when there are several."""
        last = self._last or DeadlineExceeded("no time was left to ask a target")
        if len(self._order) == 1:
            return last
        failure = type(last)(
            f"{last.message} (tried {self.tried} of {len(self._order)} targets within "
            f"{self._timeout:g} s)",
            last.violations,
        )
        failure.code = last.code
        return failure
