"""The admin API over loopback with httpx, against a real core behind a fake target.

The target implements :class:`wspipe_anyio.admin.AdminTarget` over the core's
test harness (fake clients and backends, no sockets), so every endpoint and
error status is exercised without a running proxy. Runs on asyncio and trio.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from wspipe_anyio.admin import AdminConfigError, AdminServer, load_token
from wspipe_core import BackendInfo, PipeInfo, Proxy, ProxyConfig
from wspipe_core.testing import FakeBackend, Harness

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class HarnessTarget:
    """An AdminTarget over the core's Harness: real Proxy, fake peers, explicit time."""

    def __init__(self, harness: Harness) -> None:
        self.h = harness
        self.migrated_at: list[float] = []

    @property
    def proxy(self) -> Proxy:
        return self.h.proxy

    def backends(self) -> list[BackendInfo]:
        return self.h.proxy.backends()

    def pipes(self) -> list[PipeInfo]:
        return self.h.proxy.pipes()

    def _run(self, actions: list[Any]) -> None:
        self.h._run(actions)
        self.h._drain()

    def add_backend(self, url: str, *, weight: float = 1.0) -> BackendInfo:
        info = self.h.proxy.add_backend(url, weight=weight, now=self.h.now)
        self.h.backends[url] = FakeBackend(self.h, url)
        self._run(self.h.proxy.handle_timer(self.h.now))
        return info

    def remove_backend(self, id_or_url: str, *, migrate: bool = False) -> None:
        self._run(self.h.proxy.remove_backend(id_or_url, migrate=migrate, now=self.h.now))

    def migrate_pipe(self, pipe_id: str) -> None:
        self.migrated_at.append(anyio.current_time())
        self._run(self.h.proxy.migrate_pipe(pipe_id, now=self.h.now))


def make_harness(*urls: str, **config: Any) -> tuple[Harness, HarnessTarget]:
    h = Harness(ProxyConfig(ping_interval=0, **config))
    target = HarnessTarget(h)
    for url in urls:
        target.add_backend(url)
    return h, target


@contextlib.asynccontextmanager
async def admin_client(target: HarnessTarget, *, token: str | None = TOKEN,
                       **kwargs: Any) -> AsyncIterator[tuple[AdminServer, httpx.AsyncClient]]:
    admin = AdminServer(target, token=token, clock=lambda: target.h.now, **kwargs)
    async with admin, httpx.AsyncClient(base_url=admin.url, timeout=5.0) as http:
        yield admin, http


async def test_health_and_readiness_need_no_token() -> None:
    _, target = make_harness("ws://b1:80/")
    with anyio.fail_after(10):
        async with admin_client(target) as (_, http):
            r = await http.get("/healthz")
            assert (r.status_code, r.json()) == (200, {"status": "ok"})
            r = await http.get("/readyz")
            assert r.status_code == 200
            assert r.json() == {"ready": True, "backends_up": 1, "backends": 1}
            # No backend up (the only one drains away): not ready.
            assert (await http.delete("/backends/b1", headers=AUTH)).status_code == 202
            r = await http.get("/readyz")
            assert r.status_code == 503
            assert r.json()["detail"] == "no backend is up"


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/backends"), ("POST", "/backends"), ("DELETE", "/backends/b1"),
    ("GET", "/pipes"), ("GET", "/pipes/p1"), ("GET", "/metrics"), ("GET", "/nope"),
])
async def test_token_missing_is_401_and_wrong_is_403(method: str, path: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    _, target = make_harness("ws://b1:80/")
    caplog.set_level(logging.DEBUG, logger="wspipe")
    with anyio.fail_after(10):
        async with admin_client(target) as (_, http):
            r = await http.request(method, path)
            assert r.status_code == 401
            assert "token" in r.json()["detail"]
            assert r.headers["www-authenticate"].startswith("Bearer")
            r = await http.request(method, path, headers={"Authorization": "Basic abc"})
            assert r.status_code == 401
            r = await http.request(method, path, headers={"Authorization": "Bearer wrong"})
            assert (r.status_code, r.json()) == (403, {"detail": "invalid token"})
            r = await http.request(method, path, headers={"Authorization": f"Bearer {TOKEN}x"})
            assert r.status_code == 403
            assert [b.id for b in target.backends()] == ["b1"]  # nothing happened
    assert "-> 401" in caplog.text and "-> 403: invalid token" in caplog.text
    assert TOKEN not in caplog.text  # the token is never logged


async def test_get_backends() -> None:
    _, target = make_harness("ws://b1:80/", "ws://b2:80/x")
    with anyio.fail_after(10):
        async with admin_client(target) as (_, http):
            r = await http.get("/backends", headers=AUTH)
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/json"
            assert r.json() == [
                {"id": "b1", "url": "ws://b1:80/", "state": "up", "pipes": 0, "errors": 0,
                 "consecutive_failures": 0, "weight": 1.0},
                {"id": "b2", "url": "ws://b2:80/x", "state": "up", "pipes": 0, "errors": 0,
                 "consecutive_failures": 0, "weight": 1.0},
            ]
            r = await http.get("/backends/b2", headers=AUTH)
            assert (r.status_code, r.json()["url"]) == (200, "ws://b2:80/x")
            assert (await http.get("/backends/b9", headers=AUTH)).status_code == 404


async def test_post_backends_201_400_409() -> None:
    _, target = make_harness("ws://b1:80/")
    with anyio.fail_after(10):
        async with admin_client(target) as (_, http):
            r = await http.post("/backends", json={"url": "ws://b2:80/", "weight": 2},
                                headers=AUTH)
            assert r.status_code == 201
            assert r.json() == {"id": "b2", "url": "ws://b2:80/", "state": "up", "pipes": 0,
                                "errors": 0, "consecutive_failures": 0, "weight": 2.0}
            assert r.headers["location"] == "/backends/b2"
            r = await http.post("/backends", json={"url": "ws://b2:80/"}, headers=AUTH)
            assert r.status_code == 409
            assert "already registered" in r.json()["detail"]
            bad: list[Any] = [
                {"url": "http://b3/"}, {"url": "ws://"}, {"url": "ws://u:p@b3/"},
                {"url": "ws://b3/", "weight": 0}, {"url": "ws://b3/", "weight": "heavy"},
                {"url": "ws://b3/", "weight": True}, {"weight": 1}, {"url": 7},
                {"url": "ws://b3/", "colour": "red"}, ["ws://b3/"], "ws://b3/", None,
            ]
            for body in bad:
                r = await http.post("/backends", json=body, headers=AUTH)
                assert r.status_code == 400, body
                assert r.json()["detail"], body
            r = await http.post("/backends", content=b"{not json", headers=AUTH)
            assert r.status_code == 400
            assert "not valid JSON" in r.json()["detail"]
            r = await http.post("/backends", content=b"\xff\xfe", headers=AUTH)
            assert r.status_code == 400
            assert [b.url for b in target.backends()] == ["ws://b1:80/", "ws://b2:80/"]


async def test_body_too_large_is_413() -> None:
    _, target = make_harness()
    with anyio.fail_after(10):
        async with admin_client(target, max_body=1024) as (_, http):
            big = {"url": "ws://b1:80/" + "x" * 2000}
            r = await http.post("/backends", json=big, headers=AUTH)
            assert r.status_code == 413
            assert "limit" in r.json()["detail"]

            async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
                for _ in range(4):
                    yield b" " * 512

            r = await http.post("/backends", content=chunked(), headers=AUTH)
            assert r.status_code == 413
            assert target.backends() == []
            # The connection was closed after the 413; the client reconnects.
            assert (await http.get("/healthz")).status_code == 200


async def test_unknown_path_404_and_bad_method_405() -> None:
    _, target = make_harness("ws://b1:80/")
    with anyio.fail_after(10):
        async with admin_client(target) as (_, http):
            for path in ("/", "/nope", "/backends/b1/extra", "/pipes/p1/x"):
                r = await http.get(path, headers=AUTH)
                assert r.status_code == 404, path
                assert "no such endpoint" in r.json()["detail"]
            for method, path in [("PUT", "/backends"), ("DELETE", "/backends"),
                                 ("POST", "/pipes"), ("PATCH", "/backends/b1"),
                                 ("POST", "/metrics"), ("DELETE", "/pipes/p1")]:
                r = await http.request(method, path, headers=AUTH)
                assert r.status_code == 405, (method, path)
                assert "not allowed" in r.json()["detail"]
                assert "GET" in r.headers["allow"]
            r = await http.post("/healthz")
            assert r.status_code == 405


async def test_delete_backend_202_404_400() -> None:
    h, target = make_harness("ws://b1:80/", "ws://b2:80/")
    client = h.client()
    assert target.pipes()[0].backend_id == "b1"
    with anyio.fail_after(10):
        async with admin_client(target) as (_, http):
            r = await http.delete("/backends/b9", headers=AUTH)
            assert (r.status_code, r.json()["detail"]) == (404, "no backend 'b9' in the pool")
            r = await http.delete("/backends/b1?migrate=maybe", headers=AUTH)
            assert r.status_code == 400
            r = await http.delete("/backends/b1?force=1", headers=AUTH)
            assert r.status_code == 400
            r = await http.delete("/backends/b1?migrate=false", headers=AUTH)
            assert r.status_code == 202
            body = r.json()
            assert (body["id"], body["state"], body["pipes"]) == ("b1", "draining", 1)
            assert (body["migrate"], body["removed"]) == (False, False)
            # Without migrate the pipe stays where it is; the backend takes no new pipes.
            h.client()
            assert {p.backend_id for p in target.pipes()} == {"b1", "b2"}
            listed = (await http.get("/backends", headers=AUTH)).json()
            assert [(b["id"], b["state"]) for b in listed] == [("b1", "draining"), ("b2", "up")]
            client.close_ws()  # b1's last pipe ends: it leaves the pool
            assert [b.id for b in target.backends()] == ["b2"]
            r = await http.delete("/backends/b1", headers=AUTH)
            assert r.status_code == 404
            r = await http.delete("/backends/b2", headers=AUTH)
            assert r.status_code == 202


async def test_pipes_list_and_one() -> None:
    h, target = make_harness("ws://b1:80/")
    client = h.client("/0b6a4f4e-6f3b-4b3a-9a58-0a0c8f4a1c11")
    h.advance(2.5)
    with anyio.fail_after(10):
        async with admin_client(target) as (_, http):
            r = await http.get("/pipes", headers=AUTH)
            assert r.status_code == 200
            (pipe,) = r.json()
            assert pipe["id"] == "p1"
            assert pipe["client_id"] == "0b6a4f4e-6f3b-4b3a-9a58-0a0c8f4a1c11"
            assert (pipe["backend_id"], pipe["state"]) == ("b1", "linked")
            assert (pipe["buffered_bytes"], pipe["interruptions"]) == (0, 0)
            assert pipe["age_seconds"] == 2.5
            assert isinstance(pipe["since"], float)
            assert "headers" not in pipe and "request" not in pipe  # no cookies, no tokens
            r = await http.get("/pipes/p1", headers=AUTH)
            assert (r.status_code, r.json()) == (200, pipe)
            r = await http.get("/pipes/p9", headers=AUTH)
            assert (r.status_code, r.json()) == (404, {"detail": "no pipe 'p9'"})
            client.close_ws()
            assert (await http.get("/pipes", headers=AUTH)).json() == []


async def test_post_backend_at_runtime_then_new_clients_are_routed_to_it() -> None:
    h, target = make_harness("ws://old:80/")
    first = h.client()
    with anyio.fail_after(10):
        async with admin_client(target) as (_, http):
            r = await http.post("/backends", json={"url": "ws://new:80/"}, headers=AUTH)
            assert r.status_code == 201
            assert (await http.delete("/backends/b1", headers=AUTH)).status_code == 202
            later = [h.client() for _ in range(3)]
            for i, client in enumerate(later):
                client.send(f"hello {i}")
            assert h.backends["ws://new:80/"].messages() == ["hello 0", "hello 1", "hello 2"]
            pipes = (await http.get("/pipes", headers=AUTH)).json()
            assert [p["backend_id"] for p in pipes] == ["b1", "b2", "b2", "b2"]
            first.send("still here")  # draining without migrate: the old pipe stays put
            assert h.backends["ws://old:80/"].messages() == ["still here"]


async def test_drain_with_migrate_moves_pipes_at_the_bounded_rate() -> None:
    h, target = make_harness("ws://b1:80/", "ws://b2:80/")
    clients = [h.client() for _ in range(12)]  # least connections: 6 on each backend
    assert sum(p.backend_id == "b1" for p in target.pipes()) == 6
    with anyio.fail_after(10):
        async with admin_client(target, migrate_rate=20) as (admin, http):
            r = await http.delete("/backends/b1?migrate=true", headers=AUTH)
            assert r.status_code == 202
            assert (r.json()["migrate"], r.json()["migrate_rate"]) == (True, 20.0)
            while any(b.id == "b1" for b in target.backends()):
                await anyio.sleep(0.01)
            assert admin.migrations == [] or await _settled(admin)
    assert len(target.migrated_at) == 6
    gaps = [b - a for a, b in zip(target.migrated_at, target.migrated_at[1:], strict=False)]
    assert min(gaps) >= 1 / 20 - 0.01  # at most migrate_rate pipes per second
    assert {p.backend_id for p in target.pipes()} == {"b2"}
    assert all(p.state.value == "linked" for p in target.pipes())
    assert admin.pipes_migrated == 6
    for i, client in enumerate(clients):  # every client is still connected
        assert not client.tcp_closed
        client.send(f"after {i}")
    assert len(h.backends["ws://b2:80/"].messages()) == 12


async def test_migrate_waits_for_another_backend_instead_of_moving_pipes_to_nowhere() -> None:
    h, target = make_harness("ws://only:80/")
    clients = [h.client() for _ in range(3)]
    with anyio.fail_after(10):
        async with admin_client(target, migrate_rate=100) as (admin, http):
            r = await http.delete("/backends/b1?migrate=true", headers=AUTH)
            assert r.status_code == 202
            await anyio.sleep(0.3)
            assert target.migrated_at == []  # nowhere to go: the pipes stay where they are
            assert all(p.state.value == "linked" and p.backend_id == "b1"
                       for p in target.pipes())
            assert admin.migrations == ["b1"]
            r = await http.post("/backends", json={"url": "ws://new:80/"}, headers=AUTH)
            assert r.status_code == 201
            await _settled(admin)
    assert [p.backend_id for p in target.pipes()] == ["b2", "b2", "b2"]
    assert all(not client.tcp_closed for client in clients)


async def _settled(admin: AdminServer) -> bool:
    with anyio.fail_after(2):
        while admin.migrations:
            await anyio.sleep(0.01)
    return True


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_parse_and_counters_move() -> None:
    h, target = make_harness("ws://b1:80/", "ws://b2:80/")
    with anyio.fail_after(10):
        async with admin_client(target, migrate_rate=1000) as (admin, http):
            r = await http.get("/metrics", headers=AUTH)
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain")
            before = _samples(r.text)
            assert before[("wspipe_connections", ())] == 0
            assert before[("wspipe_backends", (("state", "up"),))] == 2
            assert before[("wspipe_messages_total", (("direction", "client_to_backend"),))] == 0

            clients = [h.client() for _ in range(4)]
            for i, client in enumerate(clients):
                client.send(f"message {i}")  # 9 bytes each
            h.backends["ws://b1:80/"].links[0].send("reply")
            assert (await http.delete("/backends/b1?migrate=true", headers=AUTH)
                    ).status_code == 202
            await _settled(admin)
            clients[0].close_ws(1000)
            after = _samples((await http.get("/metrics", headers=AUTH)).text)

    def moved(name: str, *labels: tuple[str, str]) -> float:
        key = (name, tuple(sorted(labels)))
        return after[key] - before.get(key, 0.0)

    assert after[("wspipe_connections", ())] == 3
    assert moved("wspipe_clients_accepted_total") == 4
    assert moved("wspipe_messages_total", ("direction", "client_to_backend")) == 4
    assert moved("wspipe_bytes_total", ("direction", "client_to_backend")) == 36
    assert moved("wspipe_messages_total", ("direction", "backend_to_client")) == 1
    assert moved("wspipe_bytes_total", ("direction", "backend_to_client")) == 5
    assert moved("wspipe_interruptions_total", ("reason", "migrate")) == 2
    assert moved("wspipe_failovers_total", ("reason", "migrate")) == 2
    assert moved("wspipe_failover_duration_seconds_count", ("reason", "migrate")) == 2
    assert moved("wspipe_clients_closed_total", ("code", "1000")) == 1
    assert after[("wspipe_pipes", (("state", "linked"),))] == 3
    assert after[("wspipe_backends", (("state", "up"),))] == 1
    assert after[("wspipe_backend_state", (("backend", "b2"), ("state", "up"),
                                           ("url", "ws://b2:80/")))] == 1
    assert after[("wspipe_backend_pipes", (("backend", "b2"), ("url", "ws://b2:80/")))] == 3
    assert ("wspipe_backend_errors_total", (("backend", "b2"), ("url", "ws://b2:80/"))) in after
    assert ("wspipe_buffered_bytes", ()) in after
    assert ("wspipe_buffered_bytes_high_water", ()) in after


async def test_metrics_buffered_bytes_and_failover_by_reason() -> None:
    h, target = make_harness("ws://b1:80/", "ws://b2:80/")
    client = h.client()
    with anyio.fail_after(10):
        async with admin_client(target) as (_, http):
            h.backends["ws://b2:80/"].mode = "refuse"
            h.backends["ws://b1:80/"].kill()  # lost link, nowhere to go: the pipe buffers
            client.send("x" * 100)
            during = _samples((await http.get("/metrics", headers=AUTH)).text)
            # 100 payload bytes plus the per-message overhead the limits charge.
            assert during[("wspipe_buffered_bytes", ())] == 100 + 64
            assert during[("wspipe_pipes", (("state", "interrupted"),))] == 1
            h.backends["ws://b2:80/"].mode = "accept"
            h.advance(3.0)
            after = _samples((await http.get("/metrics", headers=AUTH)).text)
    assert after[("wspipe_buffered_bytes", ())] == 0
    assert after[("wspipe_buffered_bytes_high_water", ())] == 100 + 64
    assert after[("wspipe_failovers_total", (("reason", "eof"),))] == 1
    assert after[("wspipe_interruptions_total", (("reason", "eof"),))] == 1
    assert after[("wspipe_failover_duration_seconds_count", (("reason", "eof"),))] == 1
    assert after[("wspipe_failover_duration_seconds_sum", (("reason", "eof"),))] > 0
    assert after[("wspipe_link_failures_total", (("reason", "connect"),))] >= 1


async def test_malformed_request_is_400_and_idle_connection_is_closed() -> None:
    _, target = make_harness()
    with anyio.fail_after(10):
        async with admin_client(target, request_timeout=0.3) as (admin, _):
            async with await anyio.connect_tcp("127.0.0.1", admin.port) as stream:
                await stream.send(b"NOT HTTP AT ALL\r\n\r\n")
                answer = await _read_all(stream)
            assert answer.startswith(b"HTTP/1.1 400 ")
            assert b'"detail": "malformed HTTP request' in answer
            async with await anyio.connect_tcp("127.0.0.1", admin.port) as stream:
                await stream.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
                answer = await _read_all(stream)
            assert answer.startswith(b"HTTP/1.1 408 ")


async def _read_all(stream: Any) -> bytes:
    chunks = []
    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
        while True:
            chunks.append(await stream.receive())
    return b"".join(chunks)


async def test_no_token_allowed_on_loopback_only(tmp_path: Any) -> None:
    _, target = make_harness("ws://b1:80/")
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.com"):
        with pytest.raises(AdminConfigError, match="without a token"):
            AdminServer(target, host=host)
        AdminServer(target, host=host, token=TOKEN)  # allowed with a token (not started)
    with pytest.raises(AdminConfigError):
        AdminServer(target, token="")
    with pytest.raises(AdminConfigError):
        AdminServer(target, migrate_rate=0)
    with anyio.fail_after(10):
        async with admin_client(target, token=None) as (_, http):  # loopback: open
            assert (await http.get("/backends")).status_code == 200
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    assert load_token(token_file=str(token_file)) == TOKEN
    assert load_token(TOKEN) == TOKEN and load_token() is None
    with pytest.raises(AdminConfigError):
        load_token(token_file=str(tmp_path / "missing"))
    with pytest.raises(AdminConfigError):
        load_token(TOKEN, str(token_file))


async def test_expect_100_continue_and_keep_alive() -> None:
    _, target = make_harness()
    body = b'{"url": "ws://b1:80/"}'
    head = (b"POST /backends HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
            + b"\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    with anyio.fail_after(10):
        async with admin_client(target) as (admin, _), \
                await anyio.connect_tcp("127.0.0.1", admin.port) as stream:
            await stream.send(head)
            assert (await stream.receive()).startswith(b"HTTP/1.1 100 ")
            await stream.send(body)
            assert (await stream.receive()).startswith(b"HTTP/1.1 201 Created\r\n")
            await stream.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # same socket
            assert (await stream.receive()).startswith(b"HTTP/1.1 200 OK\r\n")
    assert [b.url for b in target.backends()] == ["ws://b1:80/"]
