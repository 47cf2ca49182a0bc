"""First-party plugins through the real server over 127.0.0.1, on asyncio and trio.

One test per plugin family (strategy, auth, buffer policy, backoff), plus the
tutorial's ``port_affinity`` plugin, a file outside the package, loaded by module path
in-process and with ``--plugin`` by the real command line. Backends and clients are
the websockets library's sync API in threads, so they run under either event loop.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import ServerConnection, serve

from wspipe_anyio import ProxyServer
from wspipe_core import ProxyConfig

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0
FAST = dict(handshake_timeout=2.0, ping_interval=0, close_timeout=1.0, max_interruption=10.0,
            backoff_base=0.05, backoff_max=0.2, eject_base=0.2, eject_max=1.0)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Backend:
    """A websockets server in a thread; records connections, request paths and messages."""

    def __init__(self, *, echo: bool = True, port: int = 0) -> None:
        self.echo = echo
        self.port = port
        self.paths: list[str] = []
        self.messages: list[str | bytes] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> Backend:
        self._server = serve(self._handle, "127.0.0.1", self.port, compression=None,
                             max_size=None, ping_interval=None, close_timeout=1)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._thread is not None:
            self._thread.join(TIMEOUT)

    def _handle(self, ws: ServerConnection) -> None:
        with self._lock:
            self.connections += 1
            self.paths.append(ws.request.path if ws.request else "")
        with contextlib.suppress(ConnectionClosed):
            for message in ws:
                with self._lock:
                    self.messages.append(message)
                if self.echo:
                    ws.send(message)


@contextlib.contextmanager
def running(*backends: Backend) -> Iterator[tuple[Backend, ...]]:
    for backend in backends:
        backend.start()
    try:
        yield backends
    finally:
        for backend in backends:
            backend.stop()


async def open_client(url: str, **kwargs: object) -> ClientConnection:
    options = dict(compression=None, proxy=None, open_timeout=TIMEOUT, ping_interval=None,
                   close_timeout=1, max_size=None, legacy=True)
    options.update(kwargs)
    return await anyio.to_thread.run_sync(lambda: connect(url, **options))


async def refusal(url: str, **kwargs: object) -> tuple[int, bytes]:
    """The HTTP status and body of a refused upgrade."""
    with pytest.raises(InvalidStatus) as info:
        await open_client(url, **kwargs)
    return info.value.response.status_code, info.value.response.body or b""


async def echo(ws: ClientConnection, message: str) -> str | bytes:
    await anyio.to_thread.run_sync(ws.send, message)
    return await anyio.to_thread.run_sync(lambda: ws.recv(timeout=TIMEOUT))


async def close(*clients: ClientConnection) -> None:
    for ws in clients:
        await anyio.to_thread.run_sync(ws.close)


@contextlib.asynccontextmanager
async def proxy(backends: list[str], plugins: list[object], **config: object):
    cfg = ProxyConfig(**{**FAST, "backends": tuple(backends), **config})
    server = ProxyServer(cfg, listen=[("127.0.0.1", 0)], plugins=plugins, shutdown_grace=2.0,
                         close_linger=0.5)
    with anyio.fail_after(30):
        async with server:
            yield server
    assert server.internal_errors == 0


def url(server: ProxyServer, path: str | None = None) -> str:
    return f"ws://127.0.0.1:{server.port}{path or f'/{uuid.uuid4()}'}"


# Strategy: weighted.


async def test_weighted_strategy_shares_clients_by_weight() -> None:
    with running(Backend(), Backend(), Backend()) as (b1, b2, b3):
        async with proxy([], ["weighted"]) as server:
            for backend, weight in ((b1, 1), (b2, 1), (b3, 2)):
                server.add_backend(backend.url, weight=weight)
            clients = [await open_client(url(server)) for _ in range(8)]
            for i, ws in enumerate(clients):
                assert await echo(ws, f"m{i}") == f"m{i}"
            assert (b1.connections, b2.connections, b3.connections) == (2, 2, 4)
            await close(*clients)


# Auth: token (and jwt's 401/403 split over the wire).


async def test_token_auth_over_the_wire() -> None:
    token = "server-test-token-0123456789"
    settings = {"token": {"tokens": [token]}}
    with running(Backend()) as (backend,):
        async with proxy([backend.url], ["token"], plugin_settings=settings) as server:
            status, body = await refusal(url(server))
            assert status == 401 and body.startswith(b"credentials required")
            status, body = await refusal(
                url(server), additional_headers={"Authorization": "Bearer nope"})
            assert (status, body.strip()) == (403, b"invalid token")
            by_header = await open_client(
                url(server), additional_headers={"Authorization": f"Bearer {token}"})
            by_query = await open_client(
                url(server, f"/{uuid.uuid4()}?room=7&access_token={token}"))
            assert await echo(by_header, "a") == "a"
            assert await echo(by_query, "b") == "b"
            await close(by_header, by_query)
        assert backend.connections == 2
        assert not any("access_token" in path for path in backend.paths)
        assert any(path.endswith("?room=7") for path in backend.paths)


async def test_jwt_auth_over_the_wire(tmp_path: Path) -> None:
    jwt = pytest.importorskip("jwt")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "jwt.pem"
    pem.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    settings = {"jwt": {"algorithms": ["ES256"], "public_key_file": str(pem),
                        "audience": "wspipe-test", "client_id_claim": "sid"}}
    now = time.time()
    good = jwt.encode({"sid": "s-1", "aud": "wspipe-test", "exp": now + 60}, key, "ES256")
    stale = jwt.encode({"sid": "s-2", "aud": "wspipe-test", "exp": now - 60}, key, "ES256")
    with running(Backend()) as (backend,):
        async with proxy([backend.url], ["jwt"], plugin_settings=settings) as server:
            assert (await refusal(url(server, "/chat")))[0] == 401
            status, body = await refusal(url(server, f"/chat?access_token={stale}"))
            assert (status, body.strip()) == (403, b"token expired")
            ws = await open_client(url(server, f"/chat?access_token={good}"))
            assert await echo(ws, "hello") == "hello"
            assert [p.client_id for p in server.pipes()] == ["s-1"]
            await close(ws)


# Buffer policy: pause.


async def test_pause_policy_backpressures_the_client_and_loses_nothing() -> None:
    limit, size, count = 64 * 1024, 8 * 1024, 2000  # 16 MB: far more than socket buffers
    backend = Backend(echo=False)
    sent = [0]

    def send_all(ws: ClientConnection) -> None:
        for i in range(count):
            ws.send(f"{i:08d}".ljust(size, "."))
            sent[0] = i + 1

    # The backend runs from the start (stopping it blocks, so not inside the proxy's
    # loop) but is registered only once the client is stalled: until then, no backend.
    with running(backend):
        async with proxy([], ["pause"], buffer_limit=limit, max_message_size=16 * 1024,
                         max_interruption=30.0) as server:
            ws = await open_client(url(server))
            sender = threading.Thread(target=send_all, args=(ws,), daemon=True)
            sender.start()
            await anyio.sleep(1.0)
            stalled_at = sent[0]
            await anyio.sleep(0.5)
            assert sent[0] == stalled_at < count  # the client is blocked by TCP backpressure
            assert server.proxy.budget.high_water <= limit
            assert [p.backend_id for p in server.pipes()] == [None]  # never linked
            server.add_backend(backend.url)
            with anyio.fail_after(20):
                while len(backend.messages) < count:
                    await anyio.sleep(0.05)
            await anyio.to_thread.run_sync(sender.join, TIMEOUT)
            assert backend.messages == [f"{i:08d}".ljust(size, ".") for i in range(count)]
            assert server.proxy.budget.high_water <= limit
            await close(ws)


# Backoff: fixed.


class CountingListener:
    """Accepts TCP connections and closes them at once, recording when each came."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.times: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.sock.getsockname()[1]}"

    def _run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.times.append(time.monotonic())
                conn.close()

    def close(self) -> None:
        self.sock.close()


async def test_fixed_backoff_spaces_the_retries_of_a_pipe() -> None:
    # Two failing backends: each retry may go to the one that did not just fail.
    listeners = [CountingListener(), CountingListener()]
    settings = {"backoff": {"kind": "fixed", "delay": 0.3}}
    try:
        async with proxy([x.url for x in listeners], ["backoff"], plugin_settings=settings,
                         eject_after=1000) as server:
            ws = await open_client(url(server))
            await anyio.sleep(2.0)
            await close(ws)
    finally:
        for listener in listeners:
            listener.close()
    times = sorted(t for listener in listeners for t in listener.times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 4 <= len(gaps) <= 8, gaps
    assert all(0.28 <= gap < 0.6 for gap in gaps), gaps


# The tutorial's plugin: a file outside the package, loaded by module path.


async def test_port_affinity_file_plugin_routes_every_client_to_the_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "docs" / "examples"))
    with running(Backend(), Backend(), Backend()) as backends:
        target = backends[1]
        settings = {"port_affinity": {"port": target.port}}
        async with proxy([b.url for b in backends], ["port_affinity"],
                         plugin_settings=settings) as server:
            clients = [await open_client(url(server)) for _ in range(6)]
            for i, ws in enumerate(clients):
                assert await echo(ws, f"m{i}") == f"m{i}"
            await close(*clients)
    assert [b.connections for b in backends] == [0, 6, 0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1].decode()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise AssertionError("wspipe serve did not start listening")


@pytest.mark.parametrize("async_lib", ["asyncio", "trio"])
def test_cli_plugin_flag_loads_a_file_that_routes_every_client_to_the_port(
    async_lib: str, tmp_path: Path,
) -> None:
    """``wspipe serve --plugin port_affinity``: the docs' file, by module path."""
    port = free_port()
    with running(Backend(), Backend()) as (other, target):
        config = tmp_path / "wspipe.toml"
        config.write_text(f"[plugins.port_affinity]\nport = {target.port}\n")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "docs" / "examples"), os.environ.get("PYTHONPATH", "")])}
        process = subprocess.Popen(
            [sys.executable, "-m", "wspipe_anyio", "serve", "--listen", f"127.0.0.1:{port}",
             "--backend", other.url, "--backend", target.url, "--plugin", "port_affinity",
             "--config", str(config), "--async-lib", async_lib, "--ping-interval", "0"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_listening(port, process)
            for i in range(5):
                with connect(f"ws://127.0.0.1:{port}/{uuid.uuid4()}", proxy=None,
                             compression=None, open_timeout=TIMEOUT) as ws:
                    ws.send(f"m{i}")
                    assert ws.recv(timeout=TIMEOUT) == f"m{i}"
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, stderr.decode()
        assert (other.connections, target.connections) == (0, 5)
        assert target.messages == [f"m{i}" for i in range(5)]


def test_cli_refuses_a_plugin_with_an_unknown_hook(tmp_path: Path) -> None:
    (tmp_path / "typo_cli_plugin.py").write_text(
        "from wspipe_core import hookimpl\n\n@hookimpl\ndef wspipe_select_backends(candidates):\n"
        "    return candidates[0]\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "wspipe_anyio", "serve", "--listen", "127.0.0.1:0",
         "--plugin", "typo_cli_plugin"], env=env, capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        "wspipe: error: plugin 'typo_cli_plugin' implements unknown hook "
        "'wspipe_select_backends'")
