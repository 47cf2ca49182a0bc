"""Keepalive over loopback: the proxy answers pings itself and pings both hops."""

# ruff: noqa: SIM117  (nested blocks show that the backends outlive the proxy)

from __future__ import annotations

import os
import signal

import anyio
import pytest
from peers import (
    Backend,
    Client,
    EventLog,
    ProcessBackend,
    client_path,
    running_backends,
    running_proxy,
    url,
)
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request

from wspipe_core import InterruptionCause

pytestmark = pytest.mark.anyio


async def test_a_client_ping_is_answered_by_the_proxy_and_never_reaches_the_backend() -> None:
    async with running_backends(Backend(), timeout=20) as (backend,):
        async with running_proxy([backend.url]) as server:
            client = await Client.connect(url(server, client_path()))
            pong = await anyio.to_thread.run_sync(lambda: client.ws.ping(b"are you there"))
            assert await anyio.to_thread.run_sync(lambda: pong.wait(5))
            await client.send("after the ping")
            assert await client.recv() == "after the ping"
            assert backend.messages() == ["after the ping"]
            await client.close()


async def test_a_backend_that_stops_answering_pings_is_an_interruption_and_the_pipe_moves(
) -> None:
    """SIGSTOP keeps the backend's TCP connection open but silent: only pings can tell."""
    events = EventLog()
    async with running_backends(Backend(), timeout=30) as (second,), ProcessBackend() as first:
        async with running_proxy([first.url], events=events, ping_interval=0.2,
                                 ping_timeout=0.3) as server:
            client = await Client.connect(url(server, client_path()))
            await events.wait_for("linked")
            await client.send("one")
            assert await client.recv() == "one"
            server.add_backend(second.url)
            os.kill(first.proc.pid, signal.SIGSTOP)
            try:
                await events.wait_for("resumed", timeout=5)
            finally:
                os.kill(first.proc.pid, signal.SIGCONT)
            interrupted = [e for e in events.events if e.kind.value == "interrupted"]
            assert [e.cause for e in interrupted] == [InterruptionCause.PING_TIMEOUT]
            await client.send("two")
            assert await client.recv() == "two"
            assert second.messages() == ["two"]
            assert client.ws.close_code is None  # the client never noticed
            await client.close()


async def test_a_client_that_does_not_answer_pings_is_closed_with_1011() -> None:
    """A raw client that completes the upgrade, then never answers the proxy's ping."""
    async with running_backends(Backend(), timeout=20) as (backend,):
        async with running_proxy([backend.url], ping_interval=0.2, ping_timeout=0.3) as server:
            ws = WSConnection(ConnectionType.CLIENT)
            events = []
            with anyio.fail_after(10):
                async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
                    await stream.send(ws.send(Request(host="proxy", target=client_path())))
                    while True:  # read (and decode) everything, answer nothing
                        try:
                            data = await stream.receive()
                        except (anyio.EndOfStream, anyio.BrokenResourceError):
                            break
                        ws.receive_data(data)
                        events.extend(ws.events())
            kinds = [type(e) for e in events]
            assert kinds[0] is AcceptConnection and Ping in kinds
            close = next(e for e in events if isinstance(e, CloseConnection))
            assert (close.code, close.reason) == (1011, "keepalive ping timeout")
