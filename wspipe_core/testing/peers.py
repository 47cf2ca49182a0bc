"""Fake peers that speak real WebSocket through wsproto: clients and backend links."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

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

from .. import events as ev
from ..assembler import Message


class Feeder(Protocol):
    """Where fake peers send what they write: the :class:`~wspipe_core.testing.Harness`."""

    def feed(self, event: ev.Event) -> None:
        """Hand one event to the proxy."""
        ...


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
        #: Payloads of the pings and of the pongs received, in order.
        self.pings: list[bytes] = []
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
                self.pings.append(bytes(event.payload))
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

    def mute(self) -> None:
        """From now on the peer keeps the connection but reads and answers nothing."""
        self.muted = True

    def _answer(self, reply: bytes) -> bytes:
        if reply and self._held is not None:
            self._held.append(reply)
            return b""
        return reply


class FakeClient(_Holding, _Peer):
    """A WebSocket client of the proxy (wsproto ``CLIENT``)."""

    def __init__(self, harness: Feeder, conn: int) -> None:
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
        if self.muted:
            return b""
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

    @property
    def pings(self) -> list[bytes]:
        """Payloads of the pings the proxy sent on this link."""
        return self.peer.pings if self.peer is not None else []

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

    def answer(self) -> None:
        """Accept the upgrade now: a black-holed (``"blackhole"``) backend turns slow."""
        assert self.request is not None and self.peer is None, "nothing to answer"
        sub = self.backend.choose(self.request.subprotocols)
        self.peer = _Peer(self.ws)
        self.send_raw(self.ws.send(AcceptConnection(subprotocol=sub)))

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
                    sub = self.backend.choose(event.subprotocols)
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
    ``subprotocols``: the ones it speaks, best first (it chooses the first offered one it
    speaks, or none); ``None`` chooses the first offered.
    """

    def __init__(self, harness: Feeder, url: str, *, echo: bool = False,
                 mode: str = "accept", subprotocols: Sequence[str] | None = None) -> None:
        self.harness = harness
        self.url = url
        self.echo = echo
        self.mode = mode
        self.subprotocols = None if subprotocols is None else tuple(subprotocols)
        self.links: list[BackendLink] = []

    def choose(self, offered: Sequence[str]) -> str | None:
        """The subprotocol it answers an upgrade offering ``offered`` with."""
        if self.subprotocols is None:
            return offered[0] if offered else None
        return next((p for p in offered if p in self.subprotocols), None)

    def probe_answer(self, request: bytes) -> bytes | None:
        """What it answers a health check's ``request`` with (``None``: nothing, ever)."""
        if self.mode == "blackhole":
            return None
        ws = WSConnection(ConnectionType.SERVER)
        ws.receive_data(request)
        event = next(ws.events(), None)
        if not isinstance(event, Request):
            return b""
        if self.mode == "reject":
            return ws.send(RejectConnection(status_code=503))
        return ws.send(AcceptConnection(subprotocol=self.choose(event.subprotocols)))

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


