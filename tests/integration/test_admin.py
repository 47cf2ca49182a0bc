"""The admin API over loopback with httpx, against a real core behind a harness control.

:class:`HarnessControl` implements :class:`wspipe_anyio.control.ProxyControl` over
the core's test harness (fake clients and backends, no sockets, explicit time),
through public names only, so every endpoint and error status is exercised
without a running proxy. Runs on asyncio and trio.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from wspipe_anyio.admin import AdminConfigError, AdminServer, load_token
from wspipe_anyio.metrics import Metrics
from wspipe_core import BackendHealth, BackendInfo, MigrationInfo, PipeInfo, ProxyConfig
from wspipe_core.buffer import MemoryBudget
from wspipe_core.stats import Stats
from wspipe_core.testing import FakeBackend, Harness

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: What a POST with a raw body needs besides the token.
JSON = {**AUTH, "Content-Type": "application/json"}


class HarnessControl:
    """A ProxyControl over the core's Harness: real Proxy, fake peers, explicit time."""

    def __init__(self, harness: Harness) -> None:
        self.h = harness
        self.stopping = False
        #: Created with the control, as a ProxyServer creates its own.
        self.metrics = Metrics(self, harness.proxy.pm)

    @property
    def config(self) -> ProxyConfig:
        return self.h.proxy.config

    @property
    def stats(self) -> Stats:
        return self.h.proxy.stats

    @property
    def budget(self) -> MemoryBudget:
        return self.h.proxy.budget

    @property
    def connections(self) -> int:
        return self.h.proxy.connections

    def now(self) -> float:
        return self.h.now

    def backends(self) -> list[BackendInfo]:
        return self.h.proxy.backends()

    def pipes(self) -> list[PipeInfo]:
        return self.h.proxy.pipes()

    def migrations(self) -> list[MigrationInfo]:
        return self.h.proxy.migrations_under_way()

    def backend_health(self) -> list[BackendHealth]:
        return self.h.proxy.backend_health()

    def queued_bytes(self) -> int:
        return sum(self.h.unacked.values())

    def fleet(self):
        return {"instance": None, "store": None, "members": 1,
                "instances": [{"pipes": len(self.h.proxy.pipes())}]}

    def add_backend(self, url: str, *, weight: float = 1.0) -> BackendInfo:
        info = self.h.proxy.add_backend(url, weight=weight, now=self.h.now)
        self.h.backends[url] = FakeBackend(self.h, url)
        self.h.advance(0)  # pipes waiting for a backend retry now
        return info

    def remove_backend(self, id_or_url: str, *, migrate: bool = False) -> None:
        self.h.apply(self.h.proxy.remove_backend(id_or_url, migrate=migrate, now=self.h.now))

    def migrate_pipe(self, pipe_id: str) -> None:
        self.h.apply(self.h.proxy.migrate_pipe(pipe_id, now=self.h.now))


def make_harness(*urls: str, **config: Any) -> tuple[Harness, HarnessControl]:
    h = Harness(ProxyConfig(ping_interval=0, **config))
    control = HarnessControl(h)
    for url in urls:
        control.add_backend(url)
    return h, control


@contextlib.asynccontextmanager
async def admin_client(control: HarnessControl, *, token: str | None = TOKEN,
                       **kwargs: Any) -> AsyncIterator[tuple[AdminServer, httpx.AsyncClient]]:
    admin = AdminServer(control, token=token, **kwargs)
    async with admin, httpx.AsyncClient(base_url=admin.url, timeout=5.0) as http:
        yield admin, http


async def test_health_and_readiness_need_no_token() -> None:
    _, control = make_harness("ws://b1:80/")
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
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
    _, control = make_harness("ws://b1:80/")
    caplog.set_level(logging.DEBUG, logger="wspipe")
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
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
            assert [b.id for b in control.backends()] == ["b1"]  # nothing happened
    assert "-> 401" in caplog.text and "-> 403: invalid token" in caplog.text
    assert TOKEN not in caplog.text  # the token is never logged


async def test_get_backends() -> None:
    _, control = make_harness("ws://b1:80/", "ws://b2:80/x")
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
            r = await http.get("/backends", headers=AUTH)
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/json"
            assert r.json() == [
                {"id": "b1", "url": "ws://b1:80/", "state": "up", "pipes": 0, "errors": 0,
                 "consecutive_failures": 0, "weight": 1.0, "migration": None},
                {"id": "b2", "url": "ws://b2:80/x", "state": "up", "pipes": 0, "errors": 0,
                 "consecutive_failures": 0, "weight": 1.0, "migration": None},
            ]
            r = await http.get("/backends/b2", headers=AUTH)
            assert (r.status_code, r.json()["url"]) == (200, "ws://b2:80/x")
            assert (await http.get("/backends/b9", headers=AUTH)).status_code == 404


async def test_post_backends_201_400_409() -> None:
    _, control = make_harness("ws://b1:80/")
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
            r = await http.post("/backends", json={"url": "ws://b2:80/", "weight": 2},
                                headers=AUTH)
            assert r.status_code == 201
            assert r.json() == {"id": "b2", "url": "ws://b2:80/", "state": "up", "pipes": 0,
                                "errors": 0, "consecutive_failures": 0, "weight": 2.0,
                                "migration": None}
            assert r.headers["location"] == "/backends/b2"
            r = await http.post("/backends", json={"url": "ws://b2:80/"}, headers=AUTH)
            assert r.status_code == 409
            assert "already registered" in r.json()["detail"]
            bad: list[Any] = [
                {"url": "http://b3/"}, {"url": "ws://"}, {"url": "ws://u:p@b3/"},
                {"url": "ws://b3/", "weight": 0}, {"url": "ws://b3/", "weight": "heavy"},
                {"url": "ws://b3/", "weight": True}, {"weight": 1}, {"url": 7},
                {"url": "ws://b3/", "colour": "red"}, ["ws://b3/"], "ws://b3/",
            ]
            for body in bad:
                r = await http.post("/backends", json=body, headers=AUTH)
                assert r.status_code == 400, body
                assert r.json()["detail"], body
            for raw in (b"null", b""):
                r = await http.post("/backends", content=raw, headers=JSON)
                assert r.status_code == 400, raw
            r = await http.post("/backends", content=b"{not json", headers=JSON)
            assert r.status_code == 400
            assert "not valid JSON" in r.json()["detail"]
            r = await http.post("/backends", content=b"\xff\xfe", headers=JSON)
            assert r.status_code == 400
            assert [b.url for b in control.backends()] == ["ws://b1:80/", "ws://b2:80/"]


async def test_body_too_large_is_413() -> None:
    _, control = make_harness()
    with anyio.fail_after(10):
        async with admin_client(control, max_body=1024) as (_, http):
            big = {"url": "ws://b1:80/" + "x" * 2000}
            r = await http.post("/backends", json=big, headers=AUTH)
            assert r.status_code == 413
            assert "limit" in r.json()["detail"]

            async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
                for _ in range(4):
                    yield b" " * 512

            r = await http.post("/backends", content=chunked(), headers=JSON)
            assert r.status_code == 413
            assert control.backends() == []
            # The connection was closed after the 413; the client reconnects.
            assert (await http.get("/healthz")).status_code == 200


async def test_unknown_path_404_and_bad_method_405() -> None:
    _, control = make_harness("ws://b1:80/")
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
            for path in ("/console", "/nope", "/backends/b1/extra", "/pipes/p1/x"):
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
    h, control = make_harness("ws://b1:80/", "ws://b2:80/")
    client = h.client()
    assert control.pipes()[0].backend_id == "b1"
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
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
            assert (body["migrate_rate"], body["migration"]) == (None, None)
            # Without migrate the pipe stays where it is; the backend takes no new pipes.
            h.client()
            assert {p.backend_id for p in control.pipes()} == {"b1", "b2"}
            listed = (await http.get("/backends", headers=AUTH)).json()
            assert [(b["id"], b["state"]) for b in listed] == [("b1", "draining"), ("b2", "up")]
            client.close_ws()  # b1's last pipe ends: it leaves the pool
            assert [b.id for b in control.backends()] == ["b2"]
            r = await http.delete("/backends/b1", headers=AUTH)
            assert r.status_code == 404
            r = await http.delete("/backends/b2", headers=AUTH)
            assert r.status_code == 202


async def test_pipes_list_and_one() -> None:
    h, control = make_harness("ws://b1:80/")
    client = h.client("/0b6a4f4e-6f3b-4b3a-9a58-0a0c8f4a1c11")
    h.advance(2.5)
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
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
    h, control = make_harness("ws://old:80/")
    first = h.client()
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
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


async def test_drain_with_migrate_is_paced_by_the_core_and_shown_on_the_backend() -> None:
    h, control = make_harness("ws://b1:80/", "ws://b2:80/", migrate_rate=20)
    clients = [h.client() for _ in range(12)]  # least connections: 6 on each backend
    assert sum(p.backend_id == "b1" for p in control.pipes()) == 6
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
            r = await http.delete("/backends/b1?migrate=true", headers=AUTH)
            assert r.status_code == 202
            body = r.json()
            assert (body["state"], body["migrate"], body["migrate_rate"]) == (
                "draining", True, 20.0)
            # The first pipe moves at once, the next ones one every 1/migrate_rate s.
            assert body["migration"] == {"total": 6, "moved": 1, "remaining": 5,
                                         "waiting": False}
            h.advance(2 / 20 + 0.01)  # core time, not wall-clock time
            b1 = (await http.get("/backends/b1", headers=AUTH)).json()
            assert (b1["state"], b1["migration"]) == (
                "draining", {"total": 6, "moved": 3, "remaining": 3, "waiting": False})
            listed = {b["id"]: b["migration"]
                      for b in (await http.get("/backends", headers=AUTH)).json()}
            assert listed == {"b1": b1["migration"], "b2": None}
            h.advance(3 / 20)
            assert (await http.get("/backends/b1", headers=AUTH)).status_code == 404
    assert control.stats.pipes_migrated == 6
    assert {p.backend_id for p in control.pipes()} == {"b2"}
    assert all(p.state.value == "linked" for p in control.pipes())
    for i, client in enumerate(clients):  # every client is still connected
        assert not client.tcp_closed
        client.send(f"after {i}")
    assert len(h.backends["ws://b2:80/"].messages()) == 12


async def test_migrate_waits_for_another_backend_instead_of_moving_pipes_to_nowhere() -> None:
    h, control = make_harness("ws://only:80/", migrate_rate=10)
    clients = [h.client() for _ in range(3)]
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
            r = await http.delete("/backends/b1?migrate=true", headers=AUTH)
            assert r.status_code == 202
            assert r.json()["migration"] == {"total": 3, "moved": 0, "remaining": 3,
                                             "waiting": True}
            h.advance(5.0)
            # Nowhere to go: the pipes stay (working) where they are.
            assert all(p.state.value == "linked" and p.backend_id == "b1"
                       for p in control.pipes())
            b1 = (await http.get("/backends/b1", headers=AUTH)).json()
            assert b1["migration"] == {"total": 3, "moved": 0, "remaining": 3, "waiting": True}
            r = await http.post("/backends", json={"url": "ws://new:80/"}, headers=AUTH)
            assert r.status_code == 201
            h.advance(1.0)
            assert [b["id"] for b in (await http.get("/backends", headers=AUTH)).json()] == [
                "b2"]
    assert [p.backend_id for p in control.pipes()] == ["b2", "b2", "b2"]
    assert all(not client.tcp_closed for client in clients)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_parse_and_counters_move() -> None:
    h, control = make_harness("ws://b1:80/", "ws://b2:80/")
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
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
            h.advance(1.0)  # the core moves both pipes of b1, one per 1/migrate_rate s
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
    assert moved("wspipe_pipes_migrated_total") == 2
    assert moved("wspipe_clients_closed_total", ("code", "1000")) == 1
    assert after[("wspipe_pipes", (("state", "linked"),))] == 3
    assert after[("wspipe_backends", (("state", "up"),))] == 1
    assert after[("wspipe_backend_state", (("backend", "b2"), ("state", "up"),
                                           ("url", "ws://b2:80/")))] == 1
    assert after[("wspipe_backend_pipes", (("backend", "b2"), ("url", "ws://b2:80/")))] == 3
    assert ("wspipe_backend_errors_total", (("backend", "b2"), ("url", "ws://b2:80/"))) in after
    assert ("wspipe_buffered_bytes", ()) in after
    assert ("wspipe_buffered_bytes_high_water", ()) in after
    assert after[("wspipe_outbox_bytes", ())] == 0  # the harness writes at once


async def test_metrics_migration_remaining_and_outbox_bytes() -> None:
    h = Harness(ProxyConfig(ping_interval=0, migrate_rate=1), auto_ack=False)
    control = HarnessControl(h)
    for url in ("ws://b1:80/", "ws://b2:80/"):
        control.add_backend(url)
    h.ack()
    for _ in range(4):
        h.client()
        h.ack()
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
            assert (await http.delete("/backends/b1?migrate=true", headers=AUTH)
                    ).status_code == 202
            during = _samples((await http.get("/metrics", headers=AUTH)).text)
            unacked = sum(h.unacked.values())
            h.ack()
            h.advance(2.0)
            h.ack()
            after = _samples((await http.get("/metrics", headers=AUTH)).text)
    # One of b1's two pipes moved at once; the other waits its turn (1 pipe/s).
    assert during[("wspipe_migration_remaining", (("backend", "b1"),))] == 1
    assert during[("wspipe_pipes_migrated_total", ())] == 1
    # The moved link's Close frame and the new link's upgrade are not written yet.
    assert during[("wspipe_outbox_bytes", ())] == unacked > 0
    assert ("wspipe_migration_remaining", (("backend", "b1"),)) not in after
    assert after[("wspipe_pipes_migrated_total", ())] == 2
    assert after[("wspipe_outbox_bytes", ())] == 0


async def test_failover_metrics_count_an_interruption_begun_before_the_admin_listener() -> None:
    # The metrics are the proxy's, not the admin listener's: an interruption that began
    # before the listener opened is counted with its cause when it ends.
    # (resume off: the client that leaves ends its session at once)
    h, control = make_harness("ws://b1:80/", "ws://b2:80/", resume_window=0)
    resumed, lost = h.client(), h.client()
    h.backends["ws://b2:80/"].mode = "refuse"
    h.backends["ws://b1:80/"].mode = "refuse"
    for link in [*h.backends["ws://b1:80/"].live, *h.backends["ws://b2:80/"].live]:
        link.eof()  # both pipes interrupted (cause eof), nowhere to go
    h.backends["ws://b1:80/"].mode = "accept"
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
            lost.eof()  # the client of an interrupted pipe leaves: a failed failover
            h.advance(3.0)  # the other pipe gets its new link
            text = (await http.get("/metrics", headers=AUTH)).text
    after = _samples(text)
    assert not resumed.tcp_closed
    assert after[("wspipe_interruptions_total", (("reason", "eof"),))] == 2
    assert after[("wspipe_failovers_total", (("reason", "eof"),))] == 1
    assert after[("wspipe_failover_duration_seconds_count", (("reason", "eof"),))] == 1
    assert after[("wspipe_failovers_failed_total", (("reason", "eof"),))] == 1
    assert "unknown" not in text  # every label is an InterruptionCause


async def test_metrics_buffered_bytes_and_failover_by_reason() -> None:
    h, control = make_harness("ws://b1:80/", "ws://b2:80/")
    client = h.client()
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
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


async def test_a_parked_pipe_shows_its_time_left_and_what_is_held() -> None:
    h, control = make_harness("ws://b1:80/", resume_window=10)
    client = h.client()
    client.eof()  # vanished without a Close: parked
    h.advance(4)
    link = h.backends["ws://b1:80/"].links[0]
    link.send("held 1")
    link.send("held 2")
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
            (pipe,) = (await http.get("/pipes", headers=AUTH)).json()
            summary = (await http.get("/summary", headers=AUTH)).json()
    assert pipe["parked"] is True and pipe["resume_window_left_seconds"] == 6.0
    assert pipe["held_for_client"] == 2 and pipe["state"] == "linked"
    assert summary["totals"]["parked"] == 1
    assert summary["pipes"]["items"][0]["resume_window_left_seconds"] == 6.0


async def test_metrics_count_what_at_most_once_may_have_lost() -> None:
    h, control = make_harness("ws://b1:80/", "ws://b2:80/")
    client = h.client()
    client.send("written")
    client.send("and written")  # written to b1, no pong since: possibly lost
    h.backends["ws://b1:80/"].kill()
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
            after = _samples((await http.get("/metrics", headers=AUTH)).text)
    assert after[("wspipe_messages_possibly_lost_total", (("reason", "eof"),))] == 2
    assert after[("wspipe_messages_unconfirmed_at_interruption_total", (("reason", "eof"),))] == 0
    assert after[("wspipe_pipes_delivery", (("mode", "at-most-once"),))] == 1


async def test_malformed_request_is_400_and_idle_connection_is_closed() -> None:
    _, control = make_harness()
    with anyio.fail_after(10):
        async with admin_client(control, head_timeout=0.3) as (admin, _):
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


async def test_without_a_token_one_is_generated_and_required(tmp_path: Any) -> None:
    _, control = make_harness("ws://b1:80/")
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.com"):
        with pytest.raises(AdminConfigError, match="without a token"):
            AdminServer(control, host=host)
        AdminServer(control, host=host, token=TOKEN)  # allowed with a token (not started)
    with pytest.raises(AdminConfigError):
        AdminServer(control, token="")
    tmp_path.chmod(0o700)
    admin = AdminServer(control, token_file_dir=tmp_path)  # loopback, no token: generated
    with anyio.fail_after(10):
        async with admin, httpx.AsyncClient(base_url=admin.url, timeout=5.0) as http:
            assert (await http.get("/healthz")).status_code == 200  # probes need nothing
            assert (await http.get("/backends")).status_code == 401
            assert admin.token_file == tmp_path / f"admin-{admin.port}.token"
            assert admin.token_file.read_text() == admin.token + "\n"
            r = await http.get("/backends", headers={"Authorization": f"Bearer {admin.token}"})
            assert r.status_code == 200
            assert admin.token not in repr(admin)
        assert not admin.token_file.exists()  # removed when the listener stops
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    assert load_token(token_file=str(token_file)) == TOKEN
    assert load_token(TOKEN) == TOKEN and load_token() is None
    with pytest.raises(AdminConfigError):
        load_token(token_file=str(tmp_path / "missing"))
    with pytest.raises(AdminConfigError):
        load_token(TOKEN, str(token_file))


class NaNWeights(HarnessControl):
    """A control reporting a weight no JSON can carry (as a bug or an old pool might)."""

    def backends(self) -> list[BackendInfo]:
        return [dataclasses.replace(b, weight=math.nan) for b in super().backends()]


async def test_an_answer_is_always_strict_json() -> None:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} in an answer")

    h = Harness(ProxyConfig(ping_interval=0))
    control = NaNWeights(h)
    control.add_backend("ws://b1:80/")
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
            r = await http.get("/backends", headers=AUTH)
            assert r.status_code == 500
            assert "not valid JSON" in json.loads(r.text, parse_constant=refuse)["detail"]
            assert (await http.get("/healthz")).status_code == 200  # the listener is fine


async def test_expect_100_continue_and_keep_alive() -> None:
    _, control = make_harness()
    body = b'{"url": "ws://b1:80/"}'
    head = (b"POST /backends HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + TOKEN.encode() + b"\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    with anyio.fail_after(10):
        async with admin_client(control) as (admin, _), \
                await anyio.connect_tcp("127.0.0.1", admin.port) as stream:
            await stream.send(head)
            assert (await stream.receive()).startswith(b"HTTP/1.1 100 ")
            await stream.send(body)
            assert (await stream.receive()).startswith(b"HTTP/1.1 201 Created\r\n")
            await stream.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # same socket
            assert (await stream.receive()).startswith(b"HTTP/1.1 200 OK\r\n")
    assert [b.url for b in control.backends()] == ["ws://b1:80/"]
