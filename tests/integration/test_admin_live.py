"""The admin API in front of a real ProxyServer, with real backends and clients over loopback."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from peers import free_port
from prometheus_client.parser import text_string_to_metric_families
from test_rolling import EchoBackend, Recorder, stopping
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from wspipe_anyio import ProxyServer
from wspipe_anyio.admin import AdminConfigError, AdminServer, admin_options, open_admin
from wspipe_core import ProxyConfig

pytestmark = pytest.mark.anyio

TOKEN = "live-token"


@contextlib.asynccontextmanager
async def live(backends: list[str]) -> AsyncIterator[tuple[ProxyServer, AdminServer,
                                                           httpx.AsyncClient]]:
    config = ProxyConfig(backends=tuple(backends), ping_interval=0, backoff_base=0.05,
                         backoff_max=5.0, max_interruption=20.0, migrate_rate=100)
    server = ProxyServer(config, listen=[("127.0.0.1", 0)], shutdown_grace=2.0,
                         close_linger=0.5)
    options = admin_options({"admin": "127.0.0.1:0", "admin_token": TOKEN})
    async with server, open_admin(server, options) as admin:
        assert admin is not None
        async with httpx.AsyncClient(base_url=admin.url, timeout=5.0,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            yield server, admin, http
    assert server.internal_errors == 0


async def connect_client(server: ProxyServer) -> ClientConnection:
    url = f"ws://127.0.0.1:{server.port}/{uuid.uuid4()}"
    return await anyio.to_thread.run_sync(lambda: connect(
        url, open_timeout=5, close_timeout=1, ping_interval=None, proxy=None, legacy=True))


async def echo(ws: ClientConnection, message: str) -> str:
    await anyio.to_thread.run_sync(ws.send, message)
    answer = await anyio.to_thread.run_sync(lambda: ws.recv(timeout=5))
    assert isinstance(answer, str)
    return answer


async def close(ws: ClientConnection) -> None:
    await anyio.to_thread.run_sync(ws.close)


def link_of(recorder: Recorder, message: str) -> int:
    client, seq = message.split(":")
    with recorder.lock:
        return next(link for link, got in recorder.links.items()
                    if (int(client), int(seq)) in got)


async def test_post_backend_at_runtime_then_new_clients_are_routed_to_it() -> None:
    recorder = Recorder()
    first, second = EchoBackend(recorder).start(), EchoBackend(recorder).start()
    with anyio.fail_after(20), stopping([first, second]):
        async with live([]) as (server, _, http):
            assert (await http.get("/readyz")).status_code == 503
            # A client accepted while the pool is empty waits (buffering) for a backend...
            early = await connect_client(server)
            await anyio.to_thread.run_sync(early.send, "1:0")
            r = await http.post("/backends", json={"url": first.url})
            assert r.status_code == 201 and r.json()["id"] == "b1"
            # ...and is linked as soon as one is registered (not after its backoff).
            with anyio.fail_after(1):
                assert await anyio.to_thread.run_sync(lambda: early.recv(timeout=1)) == "1:0"
            assert (await http.get("/readyz")).json()["ready"] is True

            r = await http.post("/backends", json={"url": second.url, "weight": 1})
            assert r.status_code == 201 and r.json()["id"] == "b2"
            assert (await http.delete("/backends/b1")).status_code == 202  # no new pipes
            later = [await connect_client(server) for _ in range(3)]
            for n, ws in enumerate(later, start=2):
                assert await echo(ws, f"{n}:0") == f"{n}:0"
            pipes = (await http.get("/pipes")).json()
            assert sorted(p["backend_id"] for p in pipes) == ["b1", "b2", "b2", "b2"]
            assert await echo(early, "1:1") == "1:1"  # the old pipe stays on draining b1
            assert link_of(recorder, "1:1") == link_of(recorder, "1:0")
            assert len({link_of(recorder, f"{n}:0") for n in (2, 3, 4)}) == 3
            for ws in [early, *later]:
                await close(ws)
            with anyio.fail_after(5):  # b1's last pipe ended: it left the pool
                while len((await http.get("/backends")).json()) != 1:
                    await anyio.sleep(0.02)
            assert (await http.get("/readyz")).status_code == 200
            await server.shutdown()  # SIGTERM: the load balancer must stop sending clients
            r = await http.get("/readyz")
            assert (r.status_code, r.json()["detail"]) == (503, "shutting down")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_move_with_real_traffic_and_migration() -> None:
    recorder = Recorder()
    with anyio.fail_after(20), stopping([EchoBackend(recorder).start(),
                                         EchoBackend(recorder).start()]) as (b1, b2):
        async with live([b1.url, b2.url]) as (server, _, http):
            before = samples((await http.get("/metrics")).text)
            clients = [await connect_client(server) for _ in range(4)]
            for n, ws in enumerate(clients):
                for seq in range(5):
                    assert await echo(ws, f"{n}:{seq}") == f"{n}:{seq}"
            assert (await http.delete("/backends/b1?migrate=true")).status_code == 202
            with anyio.fail_after(5):
                while server.migrations() or len((await http.get("/backends")).json()) != 1:
                    await anyio.sleep(0.02)
            for n, ws in enumerate(clients):  # still connected, now through b2
                assert await echo(ws, f"{n}:5") == f"{n}:5"
            await close(clients[0])
            with anyio.fail_after(5):
                while len((await http.get("/pipes")).json()) != 3:
                    await anyio.sleep(0.02)
            after = samples((await http.get("/metrics")).text)
            for ws in clients[1:]:
                await close(ws)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert moved("wspipe_clients_accepted_total") == 4
    assert after[("wspipe_connections", ())] == 3
    assert moved("wspipe_messages_total", direction="client_to_backend") == 24
    assert moved("wspipe_messages_total", direction="backend_to_client") == 24
    assert moved("wspipe_bytes_total", direction="client_to_backend") == 24 * 3
    assert moved("wspipe_interruptions_total", reason="migrate") == 2
    assert moved("wspipe_failovers_total", reason="migrate") == 2
    assert moved("wspipe_failover_duration_seconds_count", reason="migrate") == 2
    assert moved("wspipe_pipes_migrated_total") == 2
    assert 0 < after[("wspipe_failover_duration_seconds_sum", (("reason", "migrate"),))] < 2
    assert moved("wspipe_clients_closed_total", code="1000") == 1
    assert after[("wspipe_pipes", (("state", "linked"),))] == 3
    assert after[("wspipe_backends", (("state", "up"),))] == 1
    assert after[("wspipe_backend_pipes", (("backend", "b2"), ("url", b2.url)))] == 3


@pytest.fixture
def runtime_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose private runtime directory is a fresh temporary one."""
    tmp_path.chmod(0o700)
    return {"XDG_RUNTIME_DIR": str(tmp_path)}


def bearer(admin: AdminServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin.token}"}


async def test_readiness_recovers_with_no_traffic_when_the_cool_down_ends(
        runtime_env: dict[str, str]) -> None:
    # The pool's cool-down ends on the core's clock, not when a pipe next asks: with one
    # backend ejected and no client left, /readyz turns 200 once the cool-down is over.
    eject_base, slack = 1.5, 1.0
    port = free_port()  # nothing listens there yet: connection refused
    recorder = Recorder()
    config = ProxyConfig(backends=(f"ws://127.0.0.1:{port}/",), ping_interval=0,
                         backoff_base=0.02, backoff_max=0.05, eject_after=3,
                         eject_base=eject_base, max_interruption=0.5)
    server = ProxyServer(config, listen=[("127.0.0.1", 0)], shutdown_grace=2.0,
                         close_linger=0.5)
    options = admin_options({"admin": "127.0.0.1:0"}, environ=runtime_env)
    with anyio.fail_after(20), stopping([]) as backends:
        async with server, open_admin(server, options) as admin:
            assert admin is not None
            async with httpx.AsyncClient(base_url=admin.url, timeout=5.0,
                                         headers=bearer(admin)) as http:
                assert (await http.get("/readyz")).status_code == 200
                ws = await connect_client(server)  # accepted before any backend answers
                with anyio.fail_after(5):
                    while (await http.get("/backends")).json()[0]["state"] != "ejected":
                        await anyio.sleep(0.02)
                ejected_by = anyio.current_time()  # the cool-down ends before +eject_base
                with pytest.raises(ConnectionClosed):  # max_interruption: the client gives up
                    await anyio.to_thread.run_sync(lambda: ws.recv(timeout=5))
                assert ws.protocol.close_rcvd is not None
                assert ws.protocol.close_rcvd.code == 1013
                r = await http.get("/readyz")
                assert (r.status_code, r.json()["detail"]) == (503, "no backend is up")
                backends.append(EchoBackend(recorder, port).start())  # it is back
                with anyio.move_on_after(eject_base + slack):  # no client traffic meanwhile
                    while (await http.get("/readyz")).status_code != 200:
                        await anyio.sleep(0.05)
                assert anyio.current_time() - ejected_by <= eject_base + slack
                r = await http.get("/readyz")
                assert r.json() == {"ready": True, "backends_up": 1, "backends": 1}
                assert (await http.get("/backends")).json()[0]["state"] == "up"
                assert server.connections == 0 and recorder.total == 0
    assert server.internal_errors == 0


async def test_metrics_belong_to_the_server_and_outlive_the_admin_listener(
        runtime_env: dict[str, str]) -> None:
    recorder = Recorder()
    with anyio.fail_after(20), stopping([EchoBackend(recorder).start(),
                                         EchoBackend(recorder).start()]) as (b1, b2):
        config = ProxyConfig(backends=(b1.url,), ping_interval=0, backoff_base=0.05)
        server = ProxyServer(config, listen=[("127.0.0.1", 0)], shutdown_grace=2.0,
                             close_linger=0.5)
        async with server:
            ws = await connect_client(server)
            assert await echo(ws, "1:0") == "1:0"
            server.add_backend(b2.url)
            server.remove_backend("b1", migrate=True)  # no admin listener at all
            with anyio.fail_after(5):
                while [b.url for b in server.backends()] != [b2.url]:
                    await anyio.sleep(0.02)
            assert await echo(ws, "1:1") == "1:1"
            options = admin_options({"admin": "127.0.0.1:0"}, environ=runtime_env)
            for _ in range(2):  # opened after the failover, then once more
                async with open_admin(server, options) as admin:
                    assert admin is not None
                    async with httpx.AsyncClient(base_url=admin.url, timeout=5.0,
                                                 headers=bearer(admin)) as http:
                        after = samples((await http.get("/metrics")).text)
                assert after[("wspipe_failovers_total", (("reason", "migrate"),))] == 1
                assert after[("wspipe_pipes_migrated_total", ())] == 1
                assert after[("wspipe_messages_total", (("direction", "client_to_backend"),))
                             ] == 2
            await close(ws)
    assert server.internal_errors == 0


def test_admin_options_from_settings(runtime_env: dict[str, str]) -> None:
    assert admin_options({}) is None
    assert admin_options({"admin": None}) is None
    options = admin_options({"admin": "127.0.0.1:9191"}, environ=runtime_env)
    assert options is not None
    assert (options.host, options.port, options.generated) == ("127.0.0.1", 9191, True)
    assert options.token and options.token not in repr(options)  # generated, never shown
    assert options.token_dir == Path(runtime_env["XDG_RUNTIME_DIR"]) / "wspipe"
    assert options.token_dir.stat().st_mode & 0o777 == 0o700
    options = admin_options({"admin": "[::1]:9191", "admin_token": "given"}, environ={})
    assert options is not None and options.host == "::1"
    assert (options.token, options.generated) == ("given", False)
    options = admin_options({"admin": "0.0.0.0:9191", "admin_allow_host": "admin.example",
                             "admin_allow_origin": ["https://ops.example"]},
                            environ={"WSPIPE_ADMIN_TOKEN": "from-env"})
    assert options is not None and options.token == "from-env"
    assert (options.allowed_hosts, options.allowed_origins) == (
        ("admin.example",), ("https://ops.example",))
    assert "from-env" not in repr(options)
    for bad in ({"admin": "0.0.0.0:9191"}, {"admin": "10.0.0.1:9191"},
                {"admin": "127.0.0.1:99999"}, {"admin": "::1:9191"},
                {"admin": "127.0.0.1:9191", "admin_token": " "},
                {"admin": "127.0.0.1:9191", "admin_allow_host": "*"},
                {"admin": "127.0.0.1:9191", "admin_allow_host": "a/b"},
                {"admin": "127.0.0.1:9191", "admin_allow_origin": "*"},
                {"admin": "127.0.0.1:9191", "admin_allow_origin": "null"},
                {"admin": "127.0.0.1:9191", "admin_allow_origin": 7},
                {"admin": "127.0.0.1:9191"}):  # no token, and nowhere private to keep one
        with pytest.raises(AdminConfigError):
            admin_options(bad, environ={})
