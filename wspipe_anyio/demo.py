"""``wspipe demo``: one client session survives two backend restarts, nothing lost.

Everything runs in one process on loopback: the proxy, two echo backends and a
client that sends numbered messages. Mid-stream the backend carrying the pipe is
stopped (it closes with 1012, as a deploy would) and later the other one, after
the first is back. A plugin prints each pipe event as it happens.

The demo's backends and client are tiny stand-alone WebSocket peers written on
wsproto (already a dependency of wspipe_core). They share no code with the
driver, which never speaks WebSocket itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    Request,
    TextMessage,
)

from wspipe_core import PipeEvent, PipeEventKind, ProxyConfig, hookimpl

from .server import ProxyServer

#: Seconds between two client messages.
INTERVAL = 0.04
#: When (seconds after the first message) the backends are stopped and restarted.
STOP_FIRST, RESTART_FIRST, STOP_SECOND, RESTART_SECOND = 1.0, 2.0, 2.6, 3.6


class WSPeer:
    """A wsproto connection over an anyio stream, with whole-message assembly."""

    def __init__(self, stream: SocketStream, role: ConnectionType) -> None:
        self.stream = stream
        self.ws = WSConnection(role)
        self._lock = anyio.Lock()
        self._partial = ""

    async def send(self, event: Event) -> None:
        async with self._lock:
            if self.ws.state not in (ConnectionState.CLOSED, ConnectionState.LOCAL_CLOSING):
                await self.stream.send(self.ws.send(event))

    async def events(self) -> list[Event | str] | None:
        """The next batch of events (maybe empty); whole text messages come as ``str``.

        ``None`` once the connection has ended.
        """
        try:
            data: bytes | None = await self.stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            data = None
        self.ws.receive_data(data)
        out: list[Event | str] = []
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self._partial += event.data
                if event.message_finished:
                    out.append(self._partial)
                    self._partial = ""
            elif isinstance(event, Ping):
                await self.send(event.response())
            elif isinstance(event, CloseConnection):
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    await self.send(event.response())
                out.append(event)
            else:
                out.append(event)
        return None if data is None and not out else out


class EchoBackend:
    """An echo WebSocket server that records every message it receives, in order."""

    def __init__(self, name: str, delivered: list[tuple[str, str]]) -> None:
        self.name = name
        self.port = 0
        self._delivered = delivered
        self._listener: SocketListener | None = None
        self._peers: set[WSPeer] = set()
        self._scope = anyio.CancelScope()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self, tg: TaskGroup) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        self._listener = listener.listeners[0]  # type: ignore[assignment]
        assert self._listener is not None
        self.port = self._listener.extra(SocketAttribute.local_port)
        self._scope = anyio.CancelScope()
        tg.start_soon(self._accept, self._listener, self._scope)

    async def _accept(self, listener: SocketListener, scope: anyio.CancelScope) -> None:
        with scope:
            async with anyio.create_task_group() as tg:
                while True:
                    try:
                        stream = await listener.accept()
                    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                        return
                    tg.start_soon(self._serve, stream)

    async def _serve(self, stream: SocketStream) -> None:
        peer = WSPeer(stream, ConnectionType.SERVER)
        self._peers.add(peer)
        try:
            while (batch := await peer.events()) is not None:
                for item in batch:
                    if isinstance(item, Request):
                        await peer.send(AcceptConnection())
                    elif isinstance(item, str):
                        self._delivered.append((self.name, item))
                        await peer.send(TextMessage(data=item))
                if peer.ws.state is ConnectionState.CLOSED:
                    break
        finally:
            self._peers.discard(peer)
            await stream.aclose()

    async def stop(self, code: int = 1012, reason: str = "service restart") -> None:
        """Stop listening; close each connection with ``code`` and wait for them (<= 2 s)."""
        if self._listener is not None:
            await self._listener.aclose()
            self._listener = None
        for peer in list(self._peers):
            await peer.send(CloseConnection(code=code, reason=reason))
        with anyio.move_on_after(2.0):
            while self._peers:
                await anyio.sleep(0.01)
        self._scope.cancel()


class EventPrinter:
    """A plugin printing each ``wspipe_pipe_event`` as it happens."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.interruptions = 0
        self.resumptions = 0

    @hookimpl
    def wspipe_pipe_event(self, event: PipeEvent) -> None:
        """Print one line per pipe event."""
        backend = f" {event.backend.id} ({event.backend.url})" if event.backend else ""
        if event.kind is PipeEventKind.INTERRUPTED:
            self.interruptions += 1
            self.say(f"pipe {event.pipe.id} INTERRUPTED on{backend}: {event.reason}")
        elif event.kind is PipeEventKind.RESUMED:
            self.resumptions += 1
            self.say(f"pipe {event.pipe.id} RESUMED on{backend} after "
                     f"{(event.duration or 0) * 1000:.0f} ms")
        elif event.kind is PipeEventKind.CLOSED:
            self.say(f"pipe {event.pipe.id} closed ({event.code}) {event.reason}")
        else:
            self.say(f"pipe {event.pipe.id} {event.kind.value}{backend}")


async def run_demo(messages: int = 120) -> bool:
    """Run the demo; True when every message reached a backend once and in order."""
    started = anyio.current_time()

    def say(text: str) -> None:
        print(f"[{anyio.current_time() - started:5.2f}s] {text}", flush=True)

    delivered: list[tuple[str, str]] = []
    first, second = EchoBackend("A", delivered), EchoBackend("B", delivered)
    printer = EventPrinter(say)
    sent = [f"msg {i:03d}" for i in range(messages)]
    echoes: list[str] = []
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await first.start(tg)
            await second.start(tg)
            config = ProxyConfig(backends=(first.url, second.url), handshake_timeout=2.0,
                                 max_interruption=10.0, backoff_base=0.05, backoff_max=0.5,
                                 eject_base=0.5, eject_max=1.0, ping_interval=5.0)
            say(f"backend A on {first.url}, backend B on {second.url}")
            async with ProxyServer(config, listen=[("127.0.0.1", 0)], plugins=[printer],
                                   shutdown_grace=2.0) as server:
                say(f"proxy on ws://127.0.0.1:{server.port}")
                stream = await anyio.connect_tcp("127.0.0.1", server.port)
                client = WSPeer(stream, ConnectionType.CLIENT)
                await client.send(Request(host=f"127.0.0.1:{server.port}",
                                          target=f"/{uuid.uuid4()}"))
                while True:  # bounded by fail_after: the proxy accepts or closes
                    batch = await client.events()
                    if batch is None:
                        raise RuntimeError("the proxy refused the demo client")
                    if any(isinstance(e, AcceptConnection) for e in batch):
                        break
                say(f"client connected; sending {messages} messages, one every "
                    f"{INTERVAL * 1000:.0f} ms")

                async def receive() -> None:
                    while (batch := await client.events()) is not None:
                        echoes.extend(item for item in batch if isinstance(item, str))
                        if client.ws.state is ConnectionState.CLOSED:
                            return

                def backend_of_pipe() -> EchoBackend:
                    pipes = server.pipes()
                    urls = {b.id: b.url for b in server.backends()}
                    url = urls.get(pipes[0].backend_id or "") if pipes else None
                    return second if url == second.url else first

                async def script() -> None:
                    await anyio.sleep(STOP_FIRST)
                    victim = backend_of_pipe()
                    other = second if victim is first else first
                    say(f"stopping backend {victim.name} (it closes with 1012, like a deploy)")
                    await victim.stop()
                    await anyio.sleep(RESTART_FIRST - STOP_FIRST)
                    await victim.start(tg)
                    say(f"backend {victim.name} is back on {victim.url}")
                    await anyio.sleep(STOP_SECOND - RESTART_FIRST)
                    say(f"stopping backend {other.name}")
                    await other.stop()
                    await anyio.sleep(RESTART_SECOND - STOP_SECOND)
                    await other.start(tg)
                    say(f"backend {other.name} is back on {other.url}")

                async with anyio.create_task_group() as inner:
                    inner.start_soon(receive)
                    inner.start_soon(script)
                    for message in sent:
                        await client.send(TextMessage(data=message))
                        await anyio.sleep(INTERVAL)
                    with anyio.move_on_after(5):
                        while len(delivered) < messages or len(echoes) < messages:
                            await anyio.sleep(0.02)
                    await client.send(CloseConnection(code=1000, reason="demo done"))
                    with anyio.move_on_after(2):
                        while client.ws.state is not ConnectionState.CLOSED:
                            await anyio.sleep(0.02)
                    inner.cancel_scope.cancel()
                await stream.aclose()
            await first.stop(1001, "demo over")
            await second.stop(1001, "demo over")
            tg.cancel_scope.cancel()

    arrived = [message for _, message in delivered]
    per_backend = {name: sum(1 for n, _ in delivered if n == name) for name in ("A", "B")}
    say(f"backends received {len(arrived)} of {messages} messages "
        f"(A: {per_backend['A']}, B: {per_backend['B']}); client got {len(echoes)} echoes")
    say(f"interruptions: {printer.interruptions}, resumptions: {printer.resumptions}")
    ok = arrived == sent
    if ok:
        say("OK: every message arrived exactly once and in order")
    else:
        missing = sorted(set(sent) - set(arrived))
        dups = len(arrived) - len(set(arrived))
        say(f"FAILED: {len(missing)} missing, {dups} duplicated, "
            f"in order: {arrived == sorted(arrived)}")
    return ok
