"""Connections are shed: idle ones after the idle time, ones holding an unfinished call after
their maximum age and its grace, so that clients still get answers when many connections are
left open.

The servers here are built with `authz_service.transport.server_options`, the times shortened
by overrides (the real figures are minutes), and serve the health service registered as the
real server registers it. Each client connection has a subchannel pool of its own, so that
every channel is one TCP connection.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from authz_service.registration import GenericOnly
from authz_service.transport import SERVER_OPTIONS, server_options

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
SERVING = re.compile(r"serving on 127\.0\.0\.1:(\d+) with (\d+) descriptors")
START_TIMEOUT = 30.0


async def start(overrides: Mapping[str, int]) -> tuple[grpc.aio.Server, str]:
    """A server on port 0 with the service's options and `overrides`; returns it and its
    target."""
    server = grpc.aio.server(options=server_options(overrides))
    servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(servicer, GenericOnly(server))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def check(channel: grpc.aio.Channel, deadline: float = 10.0) -> int:
    """One health Check: the status number."""
    stub = health_pb2_grpc.HealthStub(channel)
    answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=deadline)
    return int(answer.status)


async def _never() -> AsyncIterator[bytes]:
    await asyncio.Event().wait()
    yield b""  # pragma: no cover (never reached)


def unfinished_check(channel: grpc.aio.Channel) -> grpc.aio.StreamUnaryCall[bytes, bytes]:
    """A Check whose request never comes: headers sent, no message, the stream left open."""
    call = channel.stream_unary(HEALTH_CHECK, None, None)
    return call(_never())


def test_an_idle_connection_is_closed_after_the_idle_time() -> None:
    asyncio.run(_an_idle_connection_is_closed_after_the_idle_time())


async def _an_idle_connection_is_closed_after_the_idle_time() -> None:
    server, target = await start({"grpc.max_connection_idle_ms": 300})
    try:
        async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
            assert await check(channel) == health_pb2.HealthCheckResponse.SERVING
            assert channel.get_state() == grpc.ChannelConnectivity.READY
            began = time.monotonic()
            # The server's GOAWAY closes the connection: the channel goes idle.
            await asyncio.wait_for(
                channel.wait_for_state_change(grpc.ChannelConnectivity.READY), 10
            )
            assert channel.get_state() == grpc.ChannelConnectivity.IDLE
            assert 0.2 < time.monotonic() - began < 5
            # A client reconnects on its next call.
            assert await check(channel) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(None)


def test_with_the_real_idle_time_a_connection_stays_open_between_calls() -> None:
    asyncio.run(_with_the_real_idle_time_a_connection_stays_open_between_calls())


async def _with_the_real_idle_time_a_connection_stays_open_between_calls() -> None:
    server, target = await start({})
    try:
        async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
            await check(channel)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(
                    channel.wait_for_state_change(grpc.ChannelConnectivity.READY), 1.0
                )
            assert channel.get_state() == grpc.ChannelConnectivity.READY
    finally:
        await server.stop(None)


def test_a_connection_holding_an_unfinished_call_is_closed_after_age_and_grace() -> None:
    asyncio.run(_a_connection_holding_an_unfinished_call_is_closed_after_age_and_grace())


async def _a_connection_holding_an_unfinished_call_is_closed_after_age_and_grace() -> None:
    server, target = await start(
        {"grpc.max_connection_age_ms": 500, "grpc.max_connection_age_grace_ms": 500}
    )
    try:
        async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
            began = time.monotonic()
            call = unfinished_check(channel)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await asyncio.wait_for(call, 10)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert 0.8 < time.monotonic() - began < 5
    finally:
        await server.stop(None)


def test_with_the_real_age_an_unfinished_call_is_not_cut_within_seconds() -> None:
    asyncio.run(_with_the_real_age_an_unfinished_call_is_not_cut_within_seconds())


async def _with_the_real_age_an_unfinished_call_is_not_cut_within_seconds() -> None:
    assert SERVER_OPTIONS["grpc.max_connection_age_ms"] >= 60_000
    server, target = await start({})
    try:
        async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
            call = unfinished_check(channel)
            done, _ = await asyncio.wait([asyncio.ensure_future(call)], timeout=1.5)
            assert not done
            call.cancel()
    finally:
        await server.stop(None)


# The slow test's server: a process of its own, so that its descriptor limit can be low.
SERVER_SCRIPT = textwrap.dedent(
    """
    import asyncio, resource, sys
    # Few descriptors, as if started so: the soft limit below the hard one, which the server
    # raises itself (raise_descriptor_limit). Set here, before anything opens a descriptor,
    # rather than by a preexec_fn (unsafe in a test process that runs grpc's threads).
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, int(sys.argv[1])))
    import grpc
    from grpc_health.v1 import health, health_pb2_grpc
    from authz_service.registration import GenericOnly
    from authz_service.transport import raise_descriptor_limit, server_options

    async def main():
        limit = raise_descriptor_limit()
        overrides = {"grpc.max_connection_age_ms": 6000, "grpc.max_connection_age_grace_ms": 1000}
        server = grpc.aio.server(options=server_options(overrides))
        health_pb2_grpc.add_HealthServicer_to_server(
            health.aio.HealthServicer(), GenericOnly(server)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"serving on 127.0.0.1:{port} with {limit} descriptors", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())
    """
)
HARD_LIMIT = 128


class LimitedServer:
    """The server script in a process whose descriptors are few."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER_SCRIPT, str(HARD_LIMIT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.match: re.Match[str] | None = None
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(START_TIMEOUT) or self.match is None:
            self.process.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.lines))
        self.target: str = f"127.0.0.1:{self.match[1]}"
        self.limit: int = int(self.match[2])

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if self.match is None and (found := SERVING.search(line)):
                self.match = found
                self._ready.set()
        self._ready.set()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


@pytest.mark.slow
def test_more_held_connections_than_descriptors_are_shed_and_clients_get_answers() -> None:
    asyncio.run(_more_held_connections_than_descriptors_are_shed_and_clients_get_answers())


async def _more_held_connections_than_descriptors_are_shed_and_clients_get_answers() -> None:
    server = LimitedServer()
    channels: list[grpc.aio.Channel] = []
    try:
        assert server.limit == HARD_LIMIT  # raised from the soft 64
        async with grpc.aio.insecure_channel(server.target, options=OWN_CONNECTION) as first:
            assert await check(first) == health_pb2.HealthCheckResponse.SERVING
        calls = []
        for _ in range(HARD_LIMIT + 40):
            channel = grpc.aio.insecure_channel(server.target, options=OWN_CONNECTION)
            channels.append(channel)
            calls.append(unfinished_check(channel))
        # The server accepts connections until its descriptors run out; the others wait in
        # the listen queue, never answered.
        ready = [asyncio.ensure_future(channel.channel_ready()) for channel in channels]
        done, waiting = await asyncio.wait(ready, timeout=2.0)
        assert len(done) < HARD_LIMIT
        assert waiting
        async with grpc.aio.insecure_channel(server.target, options=OWN_CONNECTION) as late:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await check(late, deadline=1.0)
            assert refused.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        async with grpc.aio.insecure_channel(server.target, options=OWN_CONNECTION) as patient:
            # Once the held connections reach their age and grace (6 s + 1 s), they are closed.
            began = time.monotonic()
            assert await check(patient, deadline=30.0) == health_pb2.HealthCheckResponse.SERVING
            assert time.monotonic() - began < 20
        for future in waiting:
            future.cancel()
        ended = await asyncio.gather(*calls[: HARD_LIMIT // 2], return_exceptions=True)
        assert all(
            isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.UNAVAILABLE
            for e in ended
        )
    finally:
        for channel in channels:
            await channel.close(None)
        server.stop()
