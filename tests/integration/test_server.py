"""The library face: ProxyServer in a task group, several listeners, backends added and drained."""

# ruff: noqa: SIM117  (nested blocks show that the backends outlive the proxy)

from __future__ import annotations

import anyio
import pytest
from peers import FAST, Backend, Client, EventLog, client_path, running_backends, running_proxy

from wspipe_anyio import ProxyServer
from wspipe_core import ProxyConfig

pytestmark = pytest.mark.anyio


async def test_listens_on_ipv4_and_ipv6_loopback() -> None:
    async with running_backends(Backend(), timeout=10) as (backend,):
        cfg = ProxyConfig(**{**FAST, "backends": (backend.url,)})
        server = ProxyServer(cfg, listen=[("127.0.0.1", 0), ("::1", 0)], shutdown_grace=2.0)
        async with anyio.create_task_group() as tg:
            await tg.start(server.run)
            assert [host for host, _ in server.addresses] == ["127.0.0.1", "::1"]
            v4, v6 = server.ports
            for address in (f"127.0.0.1:{v4}", f"[::1]:{v6}"):
                client = await Client.connect(f"ws://{address}{client_path()}")
                await client.send(address)
                assert await client.recv() == address
                await client.close()
            await server.shutdown()
        assert server.proxy.idle


async def test_remove_backend_with_migrate_moves_pipes_without_loss() -> None:
    events = EventLog()
    async with running_backends(Backend(), Backend(), timeout=10) as (first, second):
        async with running_proxy([first.url], events=events) as server:
            client = await Client.connect(f"ws://127.0.0.1:{server.port}{client_path()}")
            await client.send("one")
            assert await client.recv() == "one"
            added = server.add_backend(second.url)
            assert [b.url for b in server.backends()][-1] == added.url
            server.remove_backend(first.url, migrate=True)
            await events.wait_for("resumed")
            await client.send("two")
            assert await client.recv() == "two"
            assert first.messages() == ["one"]
            assert second.messages() == ["two"]
            assert [p.backend_id for p in server.pipes()] == [added.id]
            await client.close()


async def test_remove_backend_with_migrate_is_paced_by_the_core_and_loses_nothing() -> None:
    async with running_backends(Backend(), Backend(), timeout=15) as (first, second):
        async with running_proxy([first.url], migrate_rate=4) as server:  # 1 pipe / 0.25 s
            clients = [await Client.connect(f"ws://127.0.0.1:{server.port}{client_path()}")
                       for _ in range(3)]
            for n, client in enumerate(clients):
                await client.send(f"{n}:before")
                assert await client.recv() == f"{n}:before"
            added = server.add_backend(second.url)
            server.remove_backend("b1", migrate=True)
            # Paced by the core: the first pipe moved at once, the others wait their turn.
            (migration,) = server.migrations()
            assert (migration.backend_id, migration.total, migration.moved,
                    migration.remaining) == ("b1", 3, 1, 2)
            with anyio.fail_after(10):
                while [b.id for b in server.backends()] != [added.id]:
                    await anyio.sleep(0.02)
            assert server.migrations() == []
            assert server.stats.pipes_migrated == 3
            for n, client in enumerate(clients):
                await client.send(f"{n}:after")
                assert await client.recv() == f"{n}:after"
            assert sorted(first.messages()) == [f"{n}:before" for n in range(3)]
            assert sorted(second.messages()) == [f"{n}:after" for n in range(3)]
            for client in clients:
                await client.close()


async def test_shutdown_closes_clients_with_1001_and_leaves_proxy_idle() -> None:
    async with running_backends(Backend(), timeout=10) as (backend,):
        async with running_proxy([backend.url]) as server:
            clients = [await Client.connect(f"ws://127.0.0.1:{server.port}{client_path()}")
                       for _ in range(3)]
            for client in clients:
                await client.send("x")
                assert await client.recv() == "x"
            with anyio.fail_after(3):
                await server.shutdown()
            assert server.proxy.idle
            for client in clients:
                assert (await client.wait_closed())[0] == 1001


async def test_an_exception_from_handle_timer_is_counted_and_the_server_carries_on() -> None:
    server = ProxyServer(ProxyConfig(handshake_timeout=0.2), listen=[("127.0.0.1", 0)])
    real = server.proxy.handle_timer
    calls: list[float] = []

    def broken_once(now: float) -> list:  # type: ignore[type-arg]
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("core bug")
        return real(now)

    server.proxy.handle_timer = broken_once  # type: ignore[method-assign]
    with anyio.fail_after(5):
        async with server:
            # A client that never finishes its upgrade: its handshake timeout is a timer.
            stream = await anyio.connect_tcp("127.0.0.1", server.port)
            async with stream:
                answer = await stream.receive()
            assert answer.startswith(b"HTTP/1.1 408 ")  # the timer loop survived the bug
            assert server.internal_errors == 1 and len(calls) >= 2
