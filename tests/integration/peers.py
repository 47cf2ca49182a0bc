"""Real WebSocket peers for the integration tests, written with the websockets library.

websockets' asyncio API runs only on asyncio, so backends and clients use
``websockets.sync`` in threads while the proxy runs on the test's anyio backend
(asyncio or trio). Every blocking call has a timeout.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import Server, ServerConnection, serve

from wspipe_anyio import ProxyServer
from wspipe_core import PipeEvent, ProxyConfig, hookimpl

Message = str | bytes
TIMEOUT = 5.0


@dataclass
class Backend:
    """A websockets server in a thread that records what it receives and echoes it.

    :param on_message: Replaces the echo: called as ``on_message(ws, message)``.
    """

    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    subprotocols: list[str] | None = None
    on_message: Callable[[ServerConnection, Message], None] | None = None
    #: (connection number, message) in arrival order.
    received: list[tuple[int, Message]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    connections: list[ServerConnection] = field(default_factory=list)
    _server: Server | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context else "ws"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> Backend:
        self._server = serve(
            self._handle, "127.0.0.1", self.port, ssl=self.ssl_context, compression=None,
            max_size=None, ping_interval=None, subprotocols=self.subprotocols,  # type: ignore[arg-type]
            process_request=self._record_request, close_timeout=2)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def _record_request(self, ws: ServerConnection, request: Request) -> Response | None:
        with self._lock:
            self.requests.append(request)
        return None

    def _handle(self, ws: ServerConnection) -> None:
        with self._lock:
            number = len(self.connections)
            self.connections.append(ws)
        # Iterating ends once the close handshake is done and every message that
        # arrived before it was read: those count as delivered (design note 4).
        with contextlib.suppress(ConnectionClosed):
            for message in ws:
                with self._lock:
                    self.received.append((number, message))
                with contextlib.suppress(ConnectionClosed):  # no echo once closing
                    if self.on_message is not None:
                        self.on_message(ws, message)
                    else:
                        ws.send(message)

    def messages(self) -> list[Message]:
        with self._lock:
            return [m for _, m in self.received]

    async def wait_received(self, message: Message, timeout: float = TIMEOUT) -> None:
        """Wait until ``message`` is the last one this backend received."""
        with anyio.fail_after(timeout):
            while not self.messages() or self.messages()[-1] != message:
                await anyio.sleep(0.01)

    def stop(self, code: int = 1001, reason: str = "") -> None:
        """Stop listening; close the remaining connections with ``code`` and wait for them."""
        if self._server is not None:
            self._server.shutdown(code=code, reason=reason)
            self._server = None
        if self._thread is not None:
            self._thread.join(TIMEOUT)
            self._thread = None


class Client:
    """A websockets client connection with thread-offloaded, time-bounded calls."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> Client:
        kwargs.setdefault("compression", None)
        kwargs.setdefault("proxy", None)
        kwargs.setdefault("legacy", True)  # connect directly, not as a context manager
        kwargs.setdefault("max_size", None)
        kwargs.setdefault("max_queue", None)
        kwargs.setdefault("open_timeout", TIMEOUT)
        kwargs.setdefault("ping_interval", None)
        kwargs.setdefault("close_timeout", 2)
        ws = await anyio.to_thread.run_sync(lambda: connect(url, **kwargs))
        return cls(ws)

    async def send(self, message: Message | list[Message]) -> None:
        await anyio.to_thread.run_sync(self.ws.send, message)

    async def send_all(self, messages: list[Message]) -> None:
        for message in messages:
            await self.send(message)

    async def recv(self, timeout: float = TIMEOUT) -> Message:
        return await anyio.to_thread.run_sync(lambda: self.ws.recv(timeout=timeout))

    async def recv_n(self, n: int, timeout: float = TIMEOUT) -> list[Message]:
        return [await self.recv(timeout) for _ in range(n)]

    async def recv_until(self, last: Message, timeout: float = TIMEOUT) -> list[Message]:
        """Receive until ``last`` arrives; return everything received."""
        out: list[Message] = []
        with anyio.fail_after(timeout):
            while not out or out[-1] != last:
                out.append(await self.recv(timeout))
        return out

    async def wait_closed(self, timeout: float = TIMEOUT) -> tuple[int | None, str | None]:
        """Read until the connection closes; return (code, reason) the proxy sent."""
        def run() -> None:
            deadline = time.monotonic() + timeout
            with contextlib.suppress(ConnectionClosed):
                while time.monotonic() < deadline:
                    self.ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            await anyio.to_thread.run_sync(run)
        rcvd = self.ws.protocol.close_rcvd
        return (rcvd.code, rcvd.reason) if rcvd is not None else (None, None)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await anyio.to_thread.run_sync(self.ws.close, code, reason)


def client_path() -> str:
    return f"/{uuid.uuid4()}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def running_backends(*items: Backend, timeout: float | None = None
                           ) -> AsyncIterator[tuple[Backend, ...]]:
    """Start the backends; at the end stop them off the event loop (the proxy must keep
    running to answer their Close). With ``timeout``, the whole block is bounded by it."""
    with anyio.fail_after(timeout) if timeout is not None else contextlib.nullcontext():
        for item in items:
            item.start()
        try:
            yield items
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(TIMEOUT):
                async with anyio.create_task_group() as tg:
                    for item in items:
                        tg.start_soon(anyio.to_thread.run_sync, item.stop)


async def raw_request(port: int, data: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send raw bytes to the proxy; return everything it answers until it closes."""
    with anyio.fail_after(timeout):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            if data:
                await stream.send(data)
            chunks = []
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    chunks.append(await stream.receive())
            return b"".join(chunks)


#: Short timeouts so that every failure path completes in well under a second or two.
FAST = dict(
    handshake_timeout=2.0, ping_interval=0, max_interruption=5.0, close_timeout=1.0,
    backoff_base=0.05, backoff_max=0.2, eject_base=0.2, eject_max=1.0,
)


class EventLog:
    """A plugin that records every ``wspipe_pipe_event``."""

    def __init__(self) -> None:
        self.events: list[PipeEvent] = []

    @hookimpl
    def wspipe_pipe_event(self, event: PipeEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind.value for e in self.events]

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 5.0) -> None:
        with anyio.fail_after(timeout):
            while self.kinds().count(kind) < count:
                await anyio.sleep(0.01)


@contextlib.asynccontextmanager
async def running_proxy(backend_urls: list[str] | tuple[str, ...] = (), *,
                        events: EventLog | None = None,
                        server_kwargs: dict[str, Any] | None = None,
                        **config: Any) -> AsyncIterator[ProxyServer]:
    """Run a proxy on 127.0.0.1:<free port> for the duration of the block.

    ``config`` overrides :data:`FAST`; ``server_kwargs`` go to :class:`ProxyServer`.
    Leaving the block shuts the proxy down gracefully and checks that the driver
    saw no internal error.
    """
    cfg = ProxyConfig(**{**FAST, "backends": tuple(backend_urls), **config})
    plugins: list[object] = [events] if events is not None else []
    server = ProxyServer(cfg, listen=[("127.0.0.1", 0)], plugins=plugins,
                         shutdown_grace=2.0, close_linger=0.5, **(server_kwargs or {}))
    async with server:
        yield server
    assert server.internal_errors == 0


def url(server: ProxyServer, path: str, scheme: str = "ws") -> str:
    return f"{scheme}://127.0.0.1:{server.port}{path}"


class ProcessBackend:
    """A backend in a subprocess, killable with SIGKILL: by default ``backend_process.py``
    (websockets; its sockets reset when killed), or ``starlette_backend.py`` (uvicorn)."""

    def __init__(self, script: str = "backend_process.py", *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name(script)), *args],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().split()
        assert first[:1] == ["PORT"], first
        self.port = int(first[1])
        self.received: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("MSG "):
                self.received.append(line[4:].rstrip("\n"))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(TIMEOUT)
        self._reader.join(TIMEOUT)

    async def __aenter__(self) -> ProcessBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            await anyio.to_thread.run_sync(self.kill)


def metric(server: ProxyServer, name: str, **labels: str) -> float:
    """The value of one sample of the server's metrics (summed over unnamed labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = server.metrics.exposition()[0].decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == name
               and all(sample.labels.get(k) == v for k, v in labels.items()))

