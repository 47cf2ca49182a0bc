"""Drain-and-migrate under load and a rolling restart of a backend fleet, over loopback.

A real proxy (``ProxyServer``) with its admin API, real backends and clients
written with the websockets library in threads (so the proxy may run on asyncio or
trio). Each client streams numbered messages; backends record what each of their
connections received and echo it. The admin API drains backends with
``migrate=true`` while the clients stream. Checked: no client is ever
disconnected, and each client's messages reach the backends exactly once and in
order (each link got a contiguous run, the runs follow each other with no gap and
no overlap). Echoes are checked for duplicates, and the numbers are printed.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import anyio
import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import Server, ServerConnection, serve

from wspipe_anyio import ProxyServer
from wspipe_anyio.admin import AdminServer
from wspipe_core import ProxyConfig

pytestmark = pytest.mark.anyio

TOKEN = "rolling-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Interval between two messages of one client (each client streams ~40 msg/s).
SEND_INTERVAL = 0.025
#: Most messages one client sends (bounds the send loop).
MAX_MESSAGES = 5000


@dataclass
class Recorder:
    """What every backend connection received: connection number -> [(client, seq)]."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    links: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    total: int = 0

    def record(self, link: int, message: str) -> None:
        client, seq = message.split(":")
        with self.lock:
            self.links.setdefault(link, []).append((int(client), int(seq)))
            self.total += 1


class EchoBackend:
    """A websockets server in a thread; records into a shared :class:`Recorder` and echoes."""

    _numbers = iter(range(1, 1 << 30))
    _numbers_lock = threading.Lock()

    def __init__(self, recorder: Recorder, port: int = 0,
                 on_end: Callable[[ServerConnection], None] | None = None) -> None:
        self.recorder = recorder
        self.port = port
        #: Called with each connection once it has ended.
        self.on_end = on_end
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def start(self) -> EchoBackend:
        self._server = serve(self._handle, "127.0.0.1", self.port, compression=None,
                             ping_interval=None, close_timeout=2, max_size=None)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def _handle(self, ws: ServerConnection) -> None:
        with self._numbers_lock:
            link = next(self._numbers)
        # Messages that arrived before the proxy's Close are still read (websockets
        # queues them); an echo after that Close cannot be sent and is the backend's to lose.
        with contextlib.suppress(ConnectionClosed):
            for message in ws:
                assert isinstance(message, str)
                self.recorder.record(link, message)
                with contextlib.suppress(ConnectionClosed):
                    ws.send(message)
        if self.on_end is not None:
            self.on_end(ws)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown(code=1001)
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


class StreamingClient:
    """A websockets client streaming ``"<n>:<seq>"`` messages from a thread; another
    thread reads the echoes. Records disconnects instead of raising."""

    def __init__(self, number: int, url: str) -> None:
        self.number = number
        self.url = url
        self.sent = 0
        self.echoes: list[int] = []
        self.disconnected: str | None = None
        self._ws: ClientConnection | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._ws = connect(self.url, open_timeout=5, close_timeout=2, ping_interval=None,
                           compression=None, max_size=None, proxy=None,
                           legacy=True)
        for target in (self._send_loop, self._recv_loop):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _send_loop(self) -> None:
        assert self._ws is not None
        while not self._stop.is_set() and self.sent < MAX_MESSAGES:
            try:
                self._ws.send(f"{self.number}:{self.sent}")
            except ConnectionClosed as exc:
                self.disconnected = self.disconnected or f"send: {exc}"
                return
            self.sent += 1
            self._stop.wait(SEND_INTERVAL)

    def _recv_loop(self) -> None:
        assert self._ws is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                message = self._ws.recv(timeout=0.5)
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                if not self._stop.is_set() or self.disconnected is None:
                    self.disconnected = self.disconnected or f"recv: {exc}"
                return
            assert isinstance(message, str)
            self.echoes.append(int(message.split(":")[1]))

    def stop_sending(self) -> None:
        self._stop.set()
        self._threads[0].join(5)

    def close(self) -> None:
        self._stop.set()
        if self._ws is not None:
            alive = self.disconnected is None
            self._ws.close()
            if alive:
                self.disconnected = None  # our own close is not a disconnect
        for thread in self._threads:
            thread.join(5)


@contextlib.asynccontextmanager
async def proxy_with_admin(backends: list[str], *, migrate_rate: float
                           ) -> AsyncIterator[tuple[ProxyServer, AdminServer, httpx.AsyncClient]]:
    config = ProxyConfig(backends=tuple(backends), ping_interval=0, handshake_timeout=5.0,
                         max_interruption=10.0, backoff_base=0.02, backoff_max=0.2,
                         close_timeout=2.0, migrate_rate=migrate_rate)
    server = ProxyServer(config, listen=[("127.0.0.1", 0)], shutdown_grace=3.0,
                         close_linger=0.5)
    async with server:
        admin = AdminServer(server, token=TOKEN)
        async with admin, httpx.AsyncClient(base_url=admin.url, headers=AUTH,
                                            timeout=5.0) as http:
            yield server, admin, http
    assert server.internal_errors == 0


async def start_clients(server: ProxyServer, n: int) -> list[StreamingClient]:
    clients = [StreamingClient(i, f"ws://127.0.0.1:{server.port}/{uuid.uuid4()}")
               for i in range(n)]
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(anyio.to_thread.run_sync, client.start)
    return clients


@contextlib.contextmanager
def stopping(backends: list[EchoBackend]) -> Iterator[list[EchoBackend]]:
    try:
        yield backends
    finally:
        for backend in backends:
            with contextlib.suppress(Exception):
                backend.stop()


@contextlib.asynccontextmanager
async def streaming(clients: list[StreamingClient]) -> AsyncIterator[list[StreamingClient]]:
    """Close the clients at the end, concurrently and off the event loop (the proxy must
    keep running to answer their Close)."""
    try:
        yield clients
    finally:
        with anyio.move_on_after(5, shield=True):
            async with anyio.create_task_group() as tg:
                for client in clients:
                    tg.start_soon(anyio.to_thread.run_sync, client.close)


async def backend_gone(http: httpx.AsyncClient, backend_id: str, timeout: float) -> None:
    with anyio.fail_after(timeout):
        while True:
            ids = [b["id"] for b in (await http.get("/backends")).json()]
            if backend_id not in ids:
                return
            await anyio.sleep(0.02)


async def finish(clients: list[StreamingClient], recorder: Recorder) -> dict[str, int]:
    """Stop sending, wait for every message to reach a backend and its echo to return."""
    for client in clients:
        await anyio.to_thread.run_sync(client.stop_sending)
    expected = sum(c.sent for c in clients)
    with anyio.move_on_after(10):  # on a shortfall check() says which client lost what
        while recorder.total < expected:
            await anyio.sleep(0.02)
    # Echoes still in flight: wait until they stop coming (those a backend tried to send
    # after the proxy's Close are lost by the backend, not the proxy).
    with anyio.move_on_after(3):
        echoed = -1
        while echoed != sum(len(c.echoes) for c in clients) < expected:
            echoed = sum(len(c.echoes) for c in clients)
            await anyio.sleep(0.2)
    return {"sent": expected, "received": recorder.total,
            "echoed": sum(len(c.echoes) for c in clients)}


def check(clients: list[StreamingClient], recorder: Recorder) -> dict[str, int]:
    """Assert once-and-in-order delivery per client; return the numbers."""
    runs: dict[int, list[list[int]]] = {}
    with recorder.lock:
        for messages in recorder.links.values():
            owners = {client for client, _ in messages}
            assert len(owners) == 1, "one link carried two clients' messages"
            runs.setdefault(owners.pop(), []).append([seq for _, seq in messages])
    links_per_client = []
    echo_dupes = echo_reordered = 0
    for client in clients:
        assert client.disconnected is None, f"client {client.number}: {client.disconnected}"
        client_runs = sorted(runs.get(client.number, []), key=lambda run: run[0])
        delivered = [seq for run in client_runs for seq in run]
        assert delivered == list(range(client.sent)), (
            f"client {client.number}: sent {client.sent}, backends got {len(delivered)} "
            f"(runs {[(r[0], r[-1], len(r)) for r in client_runs]})")
        for run in client_runs:  # each link got a contiguous, ordered run
            assert run == list(range(run[0], run[0] + len(run)))
        links_per_client.append(len(client_runs))
        echo_dupes += len(client.echoes) - len(set(client.echoes))
        echo_reordered += sum(1 for a, b in zip(client.echoes, client.echoes[1:], strict=False)
                              if b < a)
    assert echo_dupes == 0
    return {"clients": len(clients), "disconnects": 0, "lost": 0, "duplicated": 0,
            "max_links_per_client": max(links_per_client),
            "echo_reordered": echo_reordered}


async def test_drain_and_migrate_under_load() -> None:
    recorder = Recorder()
    pair = [EchoBackend(recorder).start(), EchoBackend(recorder).start()]
    with anyio.fail_after(30), stopping(pair) as (b1, b2):
        async with proxy_with_admin([b1.url, b2.url], migrate_rate=100) as (
                server, _, http), streaming(await start_clients(server, 50)) as clients:
            await anyio.sleep(0.5)  # streaming through both backends
            before = {b["id"]: b["pipes"] for b in (await http.get("/backends")).json()}
            assert before == {"b1": 25, "b2": 25}
            started = anyio.current_time()
            r = await http.delete("/backends/b1", params={"migrate": "true"})
            assert r.status_code == 202
            await backend_gone(http, "b1", 10)
            migrated_in = anyio.current_time() - started
            pipes = (await http.get("/pipes")).json()
            assert len(pipes) == 50
            assert {p["backend_id"] for p in pipes} == {"b2"}
            await anyio.sleep(0.3)  # keep streaming on the remaining backend
            numbers = await finish(clients, recorder)
            result = check(clients, recorder)
            metrics = (await http.get("/metrics")).text
    assert server.stats.pipes_migrated == 25
    assert 'wspipe_failovers_total{reason="migrate"} 25.0' in metrics
    assert 'wspipe_pipes_migrated_total 25.0' in metrics
    print(f"\ndrain-and-migrate: {numbers['sent']} messages from {result['clients']} clients, "
          f"{numbers['received']} received by backends (0 lost, 0 duplicated), "
          f"{numbers['echoed']} echoes back ({result['echo_reordered']} out of order), "
          f"25 pipes migrated in {migrated_in:.2f}s, 0 disconnects")


async def test_rolling_restart_of_three_backends() -> None:
    recorder = Recorder()
    fleet = [EchoBackend(recorder).start() for _ in range(3)]
    with anyio.fail_after(30), stopping(fleet):
        async with proxy_with_admin([b.url for b in fleet], migrate_rate=200) as (
                server, _, http), streaming(await start_clients(server, 30)) as clients:
            await anyio.sleep(0.3)
            moved = 0
            for index in range(3):
                backend = fleet[index]
                info = next(b for b in (await http.get("/backends")).json()
                            if b["url"] == backend.url)
                moved += info["pipes"]
                r = await http.delete(f"/backends/{info['id']}?migrate=true")
                assert r.status_code == 202
                await backend_gone(http, info["id"], 10)
                await anyio.to_thread.run_sync(backend.stop)  # "deploy": restart it
                fleet[index] = EchoBackend(recorder, backend.port).start()
                r = await http.post("/backends", json={"url": backend.url})
                assert r.status_code == 201, r.text
                await anyio.sleep(0.3)  # stream while the fleet is whole again
            numbers = await finish(clients, recorder)
            result = check(clients, recorder)
            ids = sorted(b["id"] for b in (await http.get("/backends")).json())
    assert ids == ["b4", "b5", "b6"]
    assert server.stats.pipes_migrated == moved
    print(f"\nrolling restart of 3 backends: {numbers['sent']} messages from "
          f"{result['clients']} clients, {numbers['received']} received (0 lost, "
          f"0 duplicated), {numbers['echoed']} echoes back, {moved} pipe migrations, "
          f"up to {result['max_links_per_client']} links per client, 0 disconnects")
