"""Delivery modes over loopback, against real backends that crash or restart gracefully."""

# ruff: noqa: SIM117  (nested blocks show that the backends outlive the proxy)

from __future__ import annotations

import os
import signal

import anyio
import pytest
from peers import Client, EventLog, ProcessBackend, client_path, metric, running_proxy, url

pytestmark = pytest.mark.anyio

COUNT = 600


async def stream(client: Client, start: int, stop: int) -> None:
    for i in range(start, stop):
        await client.send(f"m{i:05d}")
        if i % 20 == 0:
            await anyio.sleep(0.001)


def processed(*backends: ProcessBackend) -> list[str]:
    return [m for b in backends for m in b.received]


async def test_at_least_once_replays_what_a_killed_backend_never_read() -> None:
    """SIGSTOP, then SIGKILL: messages written meanwhile were never read by the backend.

    (A pong proves the backend's WebSocket layer read a message, not that its
    application processed it: what sits in a killed backend's own queue is beyond any
    proxy. So the first half is processed before the fault.)"""
    events = EventLog()
    async with ProcessBackend() as first, ProcessBackend() as second:
        async with running_proxy([first.url], events=events, delivery="at-least-once",
                                 ping_interval=5, ping_timeout=5) as server:
            client = await Client.connect(url(server, client_path()))
            await events.wait_for("linked")
            server.add_backend(second.url)
            await stream(client, 0, COUNT // 2)
            with anyio.fail_after(10):  # read, and confirmed (confirm_interval later)
                while (len(first.received) < COUNT // 2
                       or server.pipes()[0].unconfirmed_messages):
                    await anyio.sleep(0.01)
            os.kill(first.proc.pid, signal.SIGSTOP)
            await stream(client, COUNT // 2, COUNT)  # written to a link nobody reads
            await anyio.sleep(0.2)
            await anyio.to_thread.run_sync(first.kill)
            await client.recv_until(f"m{COUNT - 1:05d}", timeout=20)
            sent = [f"m{i:05d}" for i in range(COUNT)]
            got = processed(first, second)
            assert set(got) == set(sent), "lost: " + str(sorted(set(sent) - set(got))[:5])
            assert second.received[:COUNT // 2] == sent[COUNT // 2:]  # replayed first, in order
            assert sum(server.stats.unconfirmed_at_interruption.values()) >= COUNT // 2
            assert (metric(server, "wspipe_messages_unconfirmed_at_interruption_total")
                    == sum(server.stats.unconfirmed_at_interruption.values()))
            assert metric(server, "wspipe_confirmations_total") >= 1
            assert metric(server, "wspipe_pipes_delivery", mode="at-least-once") == 1
            assert client.ws.close_code is None
            await client.close()


@pytest.mark.parametrize("delivery", ["at-least-once", "acked"])
async def test_a_graceful_uvicorn_restart_loses_nothing_when_messages_are_retained(
        delivery: str) -> None:
    """uvicorn closes with 1012 and drops what arrives in its last milliseconds; only
    retention makes that restart loss-free. (acked: the app does not ack, so everything
    is retained and replayed: nothing is lost, duplicates are expected.)"""
    events = EventLog()
    async with ProcessBackend("starlette_backend.py") as first, \
            ProcessBackend("starlette_backend.py") as second:
        async with running_proxy([first.url], events=events, delivery=delivery,
                                 buffer_limit=4 * 1024 * 1024) as server:
            client = await Client.connect(url(server, client_path()))
            await events.wait_for("linked")
            server.add_backend(second.url)
            async with anyio.create_task_group() as tg:
                tg.start_soon(stream, client, 0, COUNT)
                await anyio.sleep(0.1)
                os.kill(first.proc.pid, signal.SIGTERM)  # uvicorn's graceful shutdown
            await events.wait_for("resumed", timeout=10)
            with anyio.fail_after(20):
                while set(processed(first, second)) != {f"m{i:05d}" for i in range(COUNT)}:
                    await anyio.sleep(0.05)
            causes = [e.cause for e in events.events if e.kind.value == "interrupted"]
            assert causes and all(c is not None for c in causes)
            assert client.ws.close_code is None
            await client.close()
