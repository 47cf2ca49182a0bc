"""Client resume over loopback: a client's dropped connection does not end its session."""

# ruff: noqa: SIM117  (nested blocks show that the backends outlive the proxy)

from __future__ import annotations

import socket
import struct
import threading
import time

import anyio
import pytest
from peers import (
    Backend,
    Client,
    EventLog,
    client_path,
    metric,
    running_backends,
    running_proxy,
    url,
)
from websockets.sync.server import ServerConnection

pytestmark = pytest.mark.anyio

COUNT = 300


class Streamer:
    """A backend app that, told "go", streams numbered messages every 2 ms."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def __call__(self, ws: ServerConnection, message: str | bytes) -> None:
        if message == "go":
            thread = threading.Thread(target=self.stream, args=(ws,), daemon=True)
            self.threads.append(thread)
            thread.start()

    @staticmethod
    def stream(ws: ServerConnection) -> None:
        for i in range(COUNT):
            try:
                ws.send(f"b{i:04d}")
            except Exception:
                return
            time.sleep(0.002)


def drop(client: Client) -> None:
    """Reset the client's TCP connection: no Close frame, an RST."""
    sock = client.ws.socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def received_until(client: Client, last: str, timeout: float = 15) -> list[str]:
    out: list[str] = []
    with anyio.fail_after(timeout):
        while not out or out[-1] != last:
            out.append(str(await client.recv(timeout)))
    return out


async def test_a_dropped_client_resumes_and_gets_everything_sent_after_the_drop() -> None:
    events = EventLog()
    streamer = Streamer()
    async with running_backends(Backend(on_message=streamer), timeout=30) as (backend,):
        async with running_proxy([backend.url], events=events, resume_window=10) as server:
            path = client_path()
            first = await Client.connect(url(server, path))
            await first.send("go")
            before = [str(await first.recv()) for _ in range(50)]
            await anyio.to_thread.run_sync(drop, first)
            await events.wait_for("parked")
            assert metric(server, "wspipe_pipes_parked") == 1
            await anyio.sleep(0.2)  # the backend keeps streaming into the parked session
            again = await Client.connect(url(server, path))
            after = await received_until(again, f"b{COUNT - 1:04d}")
            await events.wait_for("client_resumed")
            assert len(backend.connections) == 1  # the backend saw one connection
            assert before == [f"b{i:04d}" for i in range(50)]
            # Everything after what the first connection received, in order, at most the
            # messages written to the dead socket missing (counted as possibly lost).
            lost = server.stats.possibly_lost_to_client
            expected = [f"b{i:04d}" for i in range(50, COUNT)]
            assert after == expected[len(expected) - len(after):]
            assert len(expected) - len(after) <= lost
            await again.send("and on")
            await backend.wait_received("and on")
            assert metric(server, "wspipe_pipes_parked") == 0
            assert metric(server, "wspipe_clients_parked_total") == 1
            assert metric(server, "wspipe_client_resumes_total") == 1
            assert metric(server, "wspipe_client_resume_gap_seconds_count") == 1
            assert metric(server, "wspipe_client_resume_gap_seconds_sum") >= 0.2
            assert metric(server, "wspipe_messages_possibly_lost_to_client_total") == lost
            await again.close()


async def test_a_client_resumes_through_a_backend_failover_that_happened_while_it_was_away(
) -> None:
    events = EventLog()
    async with running_backends(Backend(), Backend(), timeout=30) as (b1, b2):
        async with running_proxy([b1.url], events=events, resume_window=10) as server:
            path = client_path()
            first = await Client.connect(url(server, path))
            await first.send("one")
            assert await first.recv() == "one"
            server.add_backend(b2.url)
            await anyio.to_thread.run_sync(drop, first)
            await events.wait_for("parked")
            await anyio.to_thread.run_sync(b1.connections[0].close, 1012)  # and b1 restarts
            await events.wait_for("resumed")  # the parked session failed over meanwhile
            again = await Client.connect(url(server, path))
            await again.send("two")
            assert await again.recv() == "two"
            assert b2.messages() == ["two"] and len(b1.connections) == 1
            await again.close()


async def test_the_session_ends_when_the_client_does_not_come_back_in_time() -> None:
    events = EventLog()
    async with running_backends(Backend(), timeout=20) as (backend,):
        async with running_proxy([backend.url], events=events, resume_window=0.5) as server:
            path = client_path()
            first = await Client.connect(url(server, path))
            await first.send("x")
            assert await first.recv() == "x"
            await anyio.to_thread.run_sync(drop, first)
            await events.wait_for("expired", timeout=5)
            assert metric(server, "wspipe_resume_expired_total") == 1
            with anyio.fail_after(5):
                while backend.connections[0].close_code is None:
                    await anyio.sleep(0.02)
            assert backend.connections[0].close_code == 1001
            fresh = await Client.connect(url(server, path))  # a new session
            await fresh.send("y")
            assert await fresh.recv() == "y"
            assert len(backend.connections) == 2
            await fresh.close()
