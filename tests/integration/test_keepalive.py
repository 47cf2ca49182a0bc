"""Keepalive over loopback: the proxy answers pings itself and pings both hops."""

# ruff: noqa: SIM117  (nested blocks show that the backends outlive the proxy)

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import anyio
import pytest
from peers import (
    Backend,
    Client,
    EventLog,
    ProcessBackend,
    client_path,
    free_port,
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


async def test_a_proxy_stalled_just_past_a_pong_deadline_keeps_the_client_whose_pong_waited(
        anyio_backend: str) -> None:
    """The chaos runs' unexplained 1011s, reproduced: ``wspipe serve`` (uvloop on
    asyncio) is stopped as its ping reaches a client, the client's pong arrives while it
    is stopped, and it resumes 0.2 s past the pong deadline (too little to count as
    oversleeping). Its timer runs before the read that carries the pong: the client must
    not be dropped for a pong that was waiting in the proxy's socket."""
    async with running_backends(Backend(), timeout=30) as (backend,):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "wspipe_anyio", "serve", "--listen", f"127.0.0.1:{port}",
             "--backend", backend.url, "--ping-interval", "1", "--ping-timeout", "1",
             "--async-lib", anyio_backend, "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with anyio.fail_after(30):
                while True:  # until it listens
                    try:
                        stream = await anyio.connect_tcp("127.0.0.1", port)
                        break
                    except OSError:
                        await anyio.sleep(0.05)
                ws = WSConnection(ConnectionType.CLIENT)
                events: list[object] = []
                async with stream:
                    await stream.send(ws.send(Request(host="proxy", target=client_path())))
                    stalls = 0
                    ended = None
                    while ended is None or time.monotonic() < ended:
                        with anyio.move_on_after(0.5):
                            ws.receive_data(await stream.receive())
                        for event in ws.events():
                            events.append(event)
                            if isinstance(event, Ping):
                                pong = ws.send(event.response())
                                if stalls < 2:  # stop the proxy before it can read it
                                    stalls += 1
                                    pinged = time.monotonic()
                                    os.kill(proc.pid, signal.SIGSTOP)
                                    try:
                                        await stream.send(pong)
                                        await anyio.sleep(max(0.0, pinged + 1.2
                                                              - time.monotonic()))
                                    finally:
                                        os.kill(proc.pid, signal.SIGCONT)
                                    if stalls == 2:
                                        ended = time.monotonic() + 3  # then 3 s more
                                else:
                                    await stream.send(pong)
                            elif isinstance(event, CloseConnection):
                                ended = 0
            kinds = [type(e) for e in events]
            assert CloseConnection not in kinds, [e for e in events
                                                  if isinstance(e, CloseConnection)]
            assert kinds[0] is AcceptConnection and stalls == 2
        finally:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            proc.wait(10)
