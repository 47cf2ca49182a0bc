"""Interruptions over loopback: resets, graceful restarts, outages, black holes, overflow."""

# ruff: noqa: SIM117  (nested blocks show that the backends outlive the proxy)

from __future__ import annotations

import socket
import threading
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

pytestmark = pytest.mark.anyio


def numbered(start: int, stop: int) -> list[str]:
    return [f"m{i:04d}" for i in range(start, stop)]


async def test_backend_reset_mid_stream_client_stays_and_next_backend_gets_rest_in_order(
) -> None:
    events = EventLog()
    async with running_backends(Backend(), timeout=20) as (second,), ProcessBackend() as first:
        async with running_proxy([first.url], events=events) as server:
            client = await Client.connect(url(server, client_path()))
            await events.wait_for("linked")
            server.add_backend(second.url)
            await client.send_all(numbered(0, 5))
            assert await client.recv_n(5) == numbered(0, 5)
            await anyio.to_thread.run_sync(first.kill)  # RST on every socket of the backend
            await client.send_all(numbered(5, 10))  # mid-stream: may race the reset
            await events.wait_for("interrupted")
            await client.send_all(numbered(10, 20))
            echoes = await client.recv_until("m0019")
            assert client.ws.close_code is None  # the client never noticed
            delivered = first.received + second.messages()
            assert delivered == sorted(set(delivered)), "reordered or duplicated"
            assert first.received[:5] == numbered(0, 5)
            assert second.messages()[-10:] == numbered(10, 20)
            assert echoes == sorted(set(echoes))
            await client.close()


async def test_graceful_restart_with_1012_loses_and_duplicates_nothing() -> None:
    events = EventLog()
    sent = numbered(0, 300)
    async with running_backends(Backend(), Backend(), timeout=20) as (first, second):
        async with running_proxy([first.url], events=events) as server:
            client = await Client.connect(url(server, client_path()))
            await events.wait_for("linked")
            server.add_backend(second.url)

            def send_slowly() -> None:
                for message in sent:
                    client.ws.send(message)
                    time.sleep(0.001)

            sender = threading.Thread(target=send_slowly)
            sender.start()
            await anyio.sleep(0.1)
            await anyio.to_thread.run_sync(lambda: first.stop(code=1012, reason="restart"))
            await anyio.to_thread.run_sync(sender.join, 10)
            with anyio.move_on_after(5):
                while len(first.messages()) + len(second.messages()) < len(sent):
                    await anyio.sleep(0.02)
            await anyio.sleep(0.1)  # a duplicate would arrive now
            assert first.messages() and second.messages(), "the restart came too late"
            assert first.messages() + second.messages() == sent
            assert events.kinds().count("interrupted") == 1
            await client.close()


async def test_all_backends_down_at_connect_then_one_comes_up() -> None:
    port = free_port()
    backend = Backend(port=port)
    with anyio.fail_after(15):
        async with running_proxy([f"ws://127.0.0.1:{port}"]) as server:
            started = anyio.current_time()
            client = await Client.connect(url(server, client_path()))
            assert anyio.current_time() - started < 1.0  # accepted before any backend is up
            await client.send_all(numbered(0, 10))
            await anyio.sleep(2.0)
            await client.send_all(numbered(10, 15))
            async with running_backends(backend):
                assert await client.recv_n(15) == numbered(0, 15)
                assert backend.messages() == numbered(0, 15)
                await client.close()


async def test_black_holed_backend_is_timed_out_and_skipped() -> None:
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)  # the kernel completes TCP handshakes; nobody ever answers
    hole_url = f"ws://127.0.0.1:{hole.getsockname()[1]}"
    events = EventLog()
    try:
        async with running_backends(Backend(), timeout=15) as (good,):
            async with running_proxy([hole_url], events=events, link_timeout=0.5,
                                     race_after=0) as server:
                started = anyio.current_time()
                client = await Client.connect(url(server, client_path()))
                server.add_backend(good.url)
                await client.send("through")
                assert await client.recv() == "through"
                assert anyio.current_time() - started >= 0.4
                (hole_info,) = [b for b in server.backends() if b.url == hole_url]
                assert hole_info.errors >= 1
                assert good.messages() == ["through"]
                await client.close()
    finally:
        hole.close()


async def test_buffer_overflow_closes_only_that_client_with_1013() -> None:
    port = free_port()
    with anyio.fail_after(15):
        async with running_proxy([f"ws://127.0.0.1:{port}"], buffer_limit=64 * 1024,
                                 max_message_size=32 * 1024, max_interruption=10.0) as server:
            greedy = await Client.connect(url(server, client_path()))
            modest = await Client.connect(url(server, client_path()))
            await modest.send("small")
            for _ in range(3):
                await greedy.send(b"x" * 30_000)
            code, reason = await greedy.wait_closed()
            assert code == 1013
            assert reason and "buffer" in reason
            async with running_backends(Backend(port=port)) as (backend,):
                assert await modest.recv() == "small"
                await modest.send("still here")
                assert await modest.recv() == "still here"
                assert backend.messages() == ["small", "still here"]
                await modest.close()


@pytest.mark.parametrize(("code", "reason"), [(1000, "done"), (4001, "go away")])
async def test_backend_close_ends_pipe_and_is_relayed_with_reason(code: int, reason: str) -> None:
    def close_on_bye(ws, message) -> None:  # type: ignore[no-untyped-def]
        if message == "bye":
            ws.close(code, reason)
        else:
            ws.send(message)

    async with running_backends(Backend(on_message=close_on_bye), Backend(), timeout=10) as (
            first, second):
        async with running_proxy([first.url, second.url], strategy="round_robin") as server:
            client = await Client.connect(url(server, client_path()))
            await client.send("hello")
            assert await client.recv() == "hello"
            if second.messages():  # round robin started elsewhere: not this test's point
                pytest.fail("pipe was linked to the wrong backend")
            await client.send("bye")
            assert await client.wait_closed() == (code, reason)
            assert second.messages() == []  # not an interruption: no failover
