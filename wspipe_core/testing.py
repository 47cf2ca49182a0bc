"""Test helpers: run a :class:`Proxy` against fake wsproto peers, with explicit time.

No sockets, no sleeping. A :class:`Harness` owns a proxy, routes every action it
returns to the right fake peer, feeds the peers' answers back as events, and
steps time only when told. Fake peers speak real WebSocket through wsproto, so
what they record is what a real peer would decode. Plugin authors use it too::

    h = Harness(ProxyConfig(), plugins=[MyStrategy()])
    b1, b2 = h.backend("ws://b1:80/"), h.backend("ws://b2:80/")
    client = h.client()
    client.send("hi")
    assert b1.messages() == ["hi"]
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.events import Event as WsEvent
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from . import actions as act
from . import events as ev
from .assembler import Message
from .config import ProxyConfig
from .hooks import make_plugin_manager
from .info import PipeInfo, PipeState
from .proxy import Proxy

__all__ = ["BackendLink", "FakeBackend", "FakeClient", "Harness", "check_invariants", "encode",
           "leftovers"]


def encode(ws: WSConnection, message: Message, fragments: int = 1) -> bytes:
    """The frames of ``message`` as ``ws`` sends them, split into ``fragments`` frames."""
    data = b""
    step = max(1, -(-len(message) // fragments))
    chunks = [message[i:i + step] for i in range(0, len(message), step)] or [message]
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        frame = (TextMessage(data=chunk, message_finished=last) if isinstance(chunk, str)
                 else BytesMessage(data=chunk, message_finished=last))
        data += ws.send(frame)
    return data


class _Peer:
    """Joins fragments of what a wsproto peer receives into whole messages."""

    def __init__(self, ws: WSConnection) -> None:
        self.ws = ws
        #: Whole messages received, in order (``str`` text, ``bytes`` binary).
        self.received: list[Message] = []
        #: The Close the peer received, if any.
        self.close: CloseConnection | None = None
        #: Payloads of the pongs received, in order.
        self.pongs: list[bytes] = []
        self._parts: list[Message] = []

    def _on_events(self, events: Iterable[WsEvent]) -> bytes:
        reply = b""
        for event in events:
            if isinstance(event, TextMessage | BytesMessage):
                self._parts.append(event.data)
                if event.message_finished:
                    parts, self._parts = self._parts, []
                    joined: Message = ("".join(parts) if isinstance(parts[0], str)  # type: ignore[arg-type]
                                       else b"".join(parts))  # type: ignore[arg-type]
                    self.received.append(joined)
            elif isinstance(event, Ping):
                if self.ws.state is ConnectionState.OPEN:
                    reply += self.ws.send(event.response())
            elif isinstance(event, CloseConnection):
                self.close = event
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    reply += self.ws.send(event.response())
            elif isinstance(event, Pong):
                self.pongs.append(bytes(event.payload))
            else:
                self._on_other(event)
        return reply

    def _on_other(self, event: WsEvent) -> None:
        pass


class _Holding:
    """Peers whose automatic answers (pongs, Close replies, echoes) can be held back."""

    _held: list[bytes] | None = None
    #: Whether the peer reads nothing and answers nothing (a silent peer).
    muted = False

    @contextlib.contextmanager
    def holding(self) -> Iterator[list[bytes]]:
        """Hold back what this peer answers while the block runs.

        Yields the list of held answers; the caller sends them (``send_raw``) when
        it wants them to arrive, e.g. after bytes the peer wrote earlier, or after
        a frame the peer was in the middle of sending.
        """
        held: list[bytes] = []
        self._held = held
        try:
            yield held
        finally:
            self._held = None

    def _answer(self, reply: bytes) -> bytes:
        if reply and self._held is not None:
            self._held.append(reply)
            return b""
        return reply


class FakeClient(_Holding, _Peer):
    """A WebSocket client of the proxy (wsproto ``CLIENT``)."""

    def __init__(self, harness: Harness, conn: int) -> None:
        super().__init__(WSConnection(ConnectionType.CLIENT))
        self.harness = harness
        self.conn = conn
        #: Whether the proxy accepted the upgrade.
        self.accepted = False
        #: The accepted subprotocol.
        self.subprotocol: str | None = None
        #: For a refused upgrade: the HTTP status and body.
        self.status: int | None = None
        self.body = b""
        #: Whether the proxy closed the TCP connection.
        self.tcp_closed = False
        #: Whether the proxy told the driver to stop reading this client.
        self.paused = False
        self._raw_http = b""

    def _on_other(self, event: WsEvent) -> None:
        if isinstance(event, AcceptConnection):
            self.accepted = True
            self.subprotocol = event.subprotocol
        elif isinstance(event, RejectConnection):
            self.status = event.status_code
        elif isinstance(event, RejectData):
            self.body += event.data

    def send(self, message: Message, *, fragments: int = 1) -> None:
        """Send a message, split into ``fragments`` frames."""
        self.send_raw(encode(self.ws, message, fragments))

    def send_raw(self, data: bytes) -> None:
        """Feed raw bytes to the proxy as if they came from this client."""
        self.harness.feed(ev.ClientDataReceived(self.conn, data))

    def ping(self, payload: bytes = b"p") -> None:
        self.send_raw(self.ws.send(Ping(payload=payload)))

    def close_ws(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake."""
        self.send_raw(self.ws.send(CloseConnection(code=code, reason=reason)))

    def eof(self) -> None:
        """The client's TCP connection drops."""
        self.harness.feed(ev.ClientEOF(self.conn))

    def _receive(self, data: bytes) -> bytes:
        return self._answer(self._read(data))

    def _read(self, data: bytes) -> bytes:
        if self.status is not None or (not self.accepted and data.startswith(b"HTTP/1.1 4")) or (
                not self.accepted and data.startswith(b"HTTP/1.1 5")):
            self._raw_http += data
            self._parse_http_error()
            return b""
        try:
            self.ws.receive_data(data)
        except (LocalProtocolError, RemoteProtocolError):
            return b""
        return self._on_events(self.ws.events())

    def _parse_http_error(self) -> None:
        head, _, body = self._raw_http.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        self.body = body


@dataclass(eq=False)
class BackendLink(_Holding):
    """One link as the backend sees it (wsproto ``SERVER``)."""

    backend: FakeBackend
    link: int
    ws: WSConnection = field(default_factory=lambda: WSConnection(ConnectionType.SERVER))
    #: The upgrade request received, once complete.
    request: Request | None = None
    peer: _Peer | None = None
    #: Whether the proxy closed the TCP connection of this link.
    tcp_closed: bool = False

    @property
    def received(self) -> list[Message]:
        return self.peer.received if self.peer is not None else []

    @property
    def close(self) -> CloseConnection | None:
        return self.peer.close if self.peer is not None else None

    def header(self, name: str) -> str | None:
        """A header of the upgrade request (case-insensitive)."""
        assert self.request is not None
        for key, value in self.request.extra_headers:
            if key.decode().lower() == name.lower():
                return value.decode()
        return None

    def send(self, message: Message, *, fragments: int = 1) -> None:
        """Send a message, split into ``fragments`` frames."""
        self.send_raw(encode(self.ws, message, fragments))

    def send_raw(self, data: bytes) -> None:
        self.backend.harness.feed(ev.LinkDataReceived(self.link, data))

    def close_ws(self, code: int, reason: str = "") -> None:
        """The backend starts the close handshake with ``code``."""
        self.send_raw(self.ws.send(CloseConnection(code=code, reason=reason)))

    def eof(self, error: str = "connection reset") -> None:
        """The link's TCP connection drops."""
        self.tcp_closed = True
        self.backend.harness.feed(ev.LinkEOF(self.link, error))

    def mute(self) -> None:
        """From now on the backend keeps the connection but reads and answers nothing."""
        self.muted = True

    def _receive(self, data: bytes) -> bytes:
        if self.muted:
            return b""
        return self._answer(self._read(data))

    def _read(self, data: bytes) -> bytes:
        if self.tcp_closed:
            return b""
        mode = self.backend.mode
        if self.request is None:
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, Request):
                    self.request = event
                    if mode == "blackhole":
                        return b""
                    if mode == "reject":
                        return (self.ws.send(RejectConnection(status_code=503, has_body=True))
                                + self.ws.send(RejectData(data=b"no", body_finished=True)))
                    sub = event.subprotocols[0] if event.subprotocols else None
                    self.peer = _Peer(self.ws)
                    return self.ws.send(AcceptConnection(subprotocol=sub)) + self._events()
            return b""
        if self.peer is None:
            return b""
        try:
            self.ws.receive_data(data)
        except LocalProtocolError:
            return b""
        return self._events()

    def _events(self) -> bytes:
        assert self.peer is not None
        before = len(self.peer.received)
        reply = self.peer._on_events(self.ws.events())
        if self.backend.echo and self.ws.state is ConnectionState.OPEN:
            for message in self.peer.received[before:]:
                frame = (TextMessage(data=message) if isinstance(message, str)
                         else BytesMessage(data=message))
                reply += self.ws.send(frame)
        return reply


class FakeBackend:
    """A backend URL and the links the proxy opened to it.

    ``mode``: ``"accept"`` (default), ``"refuse"`` (TCP connect fails), ``"reject"``
    (HTTP 503 to the upgrade), ``"blackhole"`` (TCP up, never answers).
    """

    def __init__(self, harness: Harness, url: str, *, echo: bool = False,
                 mode: str = "accept") -> None:
        self.harness = harness
        self.url = url
        self.echo = echo
        self.mode = mode
        self.links: list[BackendLink] = []

    def messages(self) -> list[Message]:
        """Every message received over all links, in link order."""
        return [m for link in self.links for m in link.received]

    @property
    def live(self) -> list[BackendLink]:
        """Links whose TCP connection is still up."""
        return [link for link in self.links if not link.tcp_closed]

    def kill(self) -> None:
        """Reset every live link and refuse new connections."""
        self.mode = "refuse"
        for link in self.live:
            link.eof()


class Harness:
    """A proxy wired to fake peers, with explicit time (``now``) and instant writes.

    :param config: The proxy configuration (its ``backends`` are ignored: use
        :meth:`backend`).
    :param plugins: Plugin objects or module paths registered after the built-ins.
    :param seed: Seed of the proxy's random source.
    :param auto_ack: Report every write as done at once (``*DataSent``); turn off to
        test backpressure, then call :meth:`ack`.
    :param honour_pauses: Act like a driver that stops reading a paused connection:
        what its peer sends waits until the proxy resumes it.
    :param check: Run :func:`check_invariants` after every call of the proxy.
    """

    def __init__(self, config: ProxyConfig | None = None, *, plugins: Sequence[object] = (),
                 seed: int = 0, auto_ack: bool = True, honour_pauses: bool = False,
                 check: bool = False) -> None:
        config = config or ProxyConfig()
        pm = make_plugin_manager(config, plugins=plugins)
        self.proxy = Proxy(config, pm=pm, rng=random.Random(seed))
        self.now = 0.0
        self.auto_ack = auto_ack
        self.honour_pauses = honour_pauses
        self.check = check
        #: Connections the proxy told the driver not to read: ("c"|"l", id).
        self.paused: set[tuple[str, int]] = set()
        #: What arrived from paused connections, waiting to be read.
        self.unread: dict[tuple[str, int], list[ev.Event]] = {}
        self.clients: dict[int, FakeClient] = {}
        self.backends: dict[str, FakeBackend] = {}
        self.links: dict[int, BackendLink] = {}
        #: Every action the proxy returned, in order.
        self.actions: list[act.Action] = []
        #: Unacknowledged bytes per ("c"|"l", id) when ``auto_ack`` is off.
        self.unacked: dict[tuple[str, int], int] = {}
        self._queue: deque[ev.Event] = deque()
        self._busy = False
        self._next_conn = 1

    # -- peers

    def backend(self, url: str, *, echo: bool = False, mode: str = "accept",
                weight: float = 1.0) -> FakeBackend:
        """Register ``url`` in the pool and return its fake backend."""
        backend = FakeBackend(self, url, echo=echo, mode=mode)
        self.backends[url] = backend
        self.proxy.add_backend(url, weight=weight, now=self.now)
        return backend

    def client(self, path: str | None = None, *, subprotocols: Sequence[str] = (),
               headers: Sequence[tuple[str, str]] = (), peer: str = "127.0.0.1") -> FakeClient:
        """Connect a client and send its upgrade request (path ``/<new uuid>`` by default)."""
        conn = self._next_conn
        self._next_conn += 1
        client = FakeClient(self, conn)
        self.clients[conn] = client
        self.feed(ev.ClientConnected(conn, peer, False))
        target = path if path is not None else f"/{uuid.uuid4()}"
        data = client.ws.send(Request(host="proxy", target=target, subprotocols=list(subprotocols),
                                      extra_headers=[(k.encode(), v.encode())
                                                     for k, v in headers]))
        client.send_raw(data)
        return client

    def raw_client(self, data: bytes = b"", peer: str = "127.0.0.1") -> FakeClient:
        """Connect a client that sends ``data`` as it is (for malformed requests)."""
        conn = self._next_conn
        self._next_conn += 1
        client = FakeClient(self, conn)
        self.clients[conn] = client
        self.feed(ev.ClientConnected(conn, peer, False))
        if data:
            client.send_raw(data)
        return client

    # -- time and events

    def feed(self, event: ev.Event) -> None:
        """Hand one event to the proxy and route everything that follows."""
        self._queue.append(event)
        if self._busy:
            return
        self._busy = True
        try:
            while self._queue:
                self._run(self._handle(self._queue.popleft()))
        finally:
            self._busy = False

    def advance(self, seconds: float) -> None:
        """Move time forward, firing each deadline at its own time, in order."""
        end = self.now + seconds
        while True:
            deadline = self.proxy.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self._run(self.proxy.handle_timer(self.now))
            self._drain()
        self.now = end

    def ack(self) -> None:
        """Report every outstanding write as done (when ``auto_ack`` is off)."""
        for (kind, ident), nbytes in list(self.unacked.items()):
            del self.unacked[(kind, ident)]
            self.feed(ev.ClientDataSent(ident, nbytes) if kind == "c"
                      else ev.LinkDataSent(ident, nbytes))

    def apply(self, actions: list[act.Action]) -> None:
        """Execute actions returned by a direct ``Proxy`` call (``remove_backend``,
        ``shutdown``, ...) and route every answer, as :meth:`feed` does."""
        self._run(actions)
        self._drain()

    def pipe(self, client: FakeClient) -> PipeInfo | None:
        """The snapshot of ``client``'s pipe, or ``None`` once it has ended."""
        return self.proxy.pipe_of(client.conn)

    def _drain(self) -> None:
        if self._queue and not self._busy:
            self.feed(self._queue.popleft())

    def _handle(self, event: ev.Event) -> list[act.Action]:
        if self.honour_pauses:
            key = (("c", event.conn) if isinstance(event, ev.ClientDataReceived)
                   else ("l", event.link) if isinstance(event, ev.LinkDataReceived) else None)
            if key is not None and key in self.paused:
                self.unread.setdefault(key, []).append(event)
                return []
        return self.proxy.handle(event, self.now)

    def _run(self, actions: list[act.Action]) -> None:
        if self.check:
            check_invariants(self.proxy)
        for action in actions:
            key = (("c", action.conn) if isinstance(action, act.PauseClient | act.ResumeClient)
                   else ("l", action.link) if isinstance(action, act.PauseLink | act.ResumeLink)
                   else None)
            if key is None:
                continue
            if isinstance(action, act.PauseClient | act.PauseLink):
                self.paused.add(key)
            else:
                self.paused.discard(key)
                # Read what waited, before anything the peer sends from now on.
                self._queue.extend(self.unread.pop(key, []))
        self.actions.extend(actions)
        for action in actions:
            self._execute(action)

    def _execute(self, action: act.Action) -> None:
        if isinstance(action, act.SendToClient):
            client = self.clients[action.conn]
            self._sent("c", action.conn, len(action.data))
            reply = client._receive(action.data)
            if reply and not client.tcp_closed:
                self._queue.append(ev.ClientDataReceived(action.conn, reply))
        elif isinstance(action, act.CloseClient):
            self.clients[action.conn].tcp_closed = True
        elif isinstance(action, act.PauseClient | act.ResumeClient):
            self.clients[action.conn].paused = isinstance(action, act.PauseClient)
        elif isinstance(action, act.OpenLink):
            backend = self.backends.get(action.url)
            if backend is None or backend.mode == "refuse":
                self._queue.append(ev.LinkConnectFailed(action.link, "connection refused"))
                return
            link = BackendLink(backend, action.link)
            backend.links.append(link)
            self.links[action.link] = link
            self._queue.append(ev.LinkConnected(action.link))
        elif isinstance(action, act.SendToLink):
            link = self.links[action.link]
            self._sent("l", action.link, len(action.data))
            reply = link._receive(action.data)
            if reply and not link.tcp_closed:
                self._queue.append(ev.LinkDataReceived(action.link, reply))
        elif isinstance(action, act.CloseLink):
            if action.link in self.links:
                self.links[action.link].tcp_closed = True
        elif isinstance(action, act.PauseLink | act.ResumeLink):
            pass
        else:  # pragma: no cover
            raise RuntimeError(f"unknown action {action!r}")

    def _sent(self, kind: str, ident: int, nbytes: int) -> None:
        if self.auto_ack:
            self._queue.append(ev.ClientDataSent(ident, nbytes) if kind == "c"
                               else ev.LinkDataSent(ident, nbytes))
        else:
            self.unacked[(kind, ident)] = self.unacked.get((kind, ident), 0) + nbytes


def check_invariants(proxy: Proxy) -> None:
    """Assert what must hold between any two calls of ``proxy`` (for property tests).

    Every pipe holds no more than ``buffer_limit`` and exactly what its buffer and
    its client's message in progress cost; the memory budget is the sum over pipes;
    a backend's load is the pipes whose link it holds; a pipe's live link is
    registered and belongs to it; peers point at each other only on a live relay.
    """
    cfg = proxy.config
    sessions = proxy._sessions
    pipes = list(sessions.by_conn.values())
    for pipe in pipes:
        lane = pipe.lane
        assert 0 <= lane.held <= cfg.buffer_limit, (pipe.id, lane.held)
        assert lane.held == lane.buffer.cost + pipe.client.assembler.size, pipe.id
        if pipe.link is not None:
            assert proxy._links.get(pipe.link.id) is pipe.link, pipe.id
            assert pipe.link.owner is pipe, pipe.id
        peer = pipe.client.peer
        if peer is not None:
            assert peer is pipe.link and peer.peer is pipe.client, pipe.id  # type: ignore[union-attr]
            assert pipe.state is PipeState.LINKED, (pipe.id, pipe.state)
    assert 0 <= proxy.budget.used <= cfg.memory_budget
    assert proxy.budget.used == sum(p.lane.held for p in pipes)
    for backend in proxy.pool:
        assert backend.pipes == sum(1 for p in pipes
                                    if p.link is not None and p.link.backend is backend)


def leftovers(proxy: Proxy) -> dict[str, int]:
    """What the core still holds, by kind; all zero once every client and link is gone."""
    sessions = proxy._sessions
    return {
        "pending clients": len(proxy._handshakes),
        "pipes": len(sessions.by_conn) + len(sessions.by_id),
        "client ids": len(sessions.by_client_id),
        "links": len(proxy._links),
        "budget waiters": proxy._flow.budget_waiters,
        "budget bytes": proxy.budget.used,
        "deadlines": len(proxy._timers),
        "timer heap": proxy._timers.deadlines.heap_size,
        "unsent actions": len(proxy._flow.out),
    }
