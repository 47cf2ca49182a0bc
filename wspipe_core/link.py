"""A link: one backend WebSocket connection of a pipe, and its life from dial to close.

The link decides what its bytes mean — handshake answered or refused, a message,
a ping to answer, a pong, the backend's Close, a protocol error — and when it
counts as *proven* (the backend answered: a message or a pong). It reports typed
outcomes to the session that owns it and never decides the pipe's fate.

States: ``DIALING`` (``OpenLink`` sent) -> ``HANDSHAKING`` (upgrade sent) -> ``OPEN``
-> ``CLOSING`` (a Close was sent or received). ``handshake_timeout`` bounds dialing
plus handshake; ``close_timeout`` bounds closing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .actions import OpenLink, PauseLink, ResumeLink, SendToLink
from .codes import InterruptionCause, LinkFailure
from .deadlines import GRACE, overslept
from .events import LinkId
from .flow import Endpoint, Flow, Hold
from .info import BackendRequest
from .keepalive import Keepalive
from .pool import Backend
from .wire import Wire

_OPENISH = (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)


class LinkState(enum.Enum):
    """The state of a link."""

    #: ``OpenLink`` was sent; waiting for ``LinkConnected``.
    DIALING = "dialing"
    #: The upgrade request was sent; waiting for the backend's answer.
    HANDSHAKING = "handshaking"
    #: Messages flow. Only an open link that is its pipe's ``link`` is live.
    OPEN = "open"
    #: A Close was sent or received; waiting for the close handshake to finish.
    CLOSING = "closing"


# Outcomes a link reports to its session.


@dataclass(frozen=True, slots=True)
class Opened:
    """The backend accepted the upgrade."""

    subprotocol: str | None


@dataclass(frozen=True, slots=True)
class Proven:
    """The backend answered on this link for the first time: a success for the pool."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The link failed before it opened."""

    cause: LinkFailure
    why: str
    #: The HTTP status the backend answered the upgrade with, if it did.
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Lost:
    """The open link failed (EOF, reset, ping timeout, protocol error)."""

    cause: InterruptionCause
    why: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The backend closed the open link with ``code``; the link answered it already."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Confirmed:
    """A pong answered the confirmation ping sent after client message ``seq``: the
    backend's WebSocket layer read every message up to it (at-least-once)."""

    seq: int


@dataclass(frozen=True, slots=True)
class Done:
    """The link is finished (close handshake over, or its socket gone while closing)."""


Outcome = Opened | Proven | Failed | Lost | Closed | Confirmed | Done

#: Payload prefix of the pings that ask a backend to confirm what it read.
CONFIRM_PREFIX = b"wspipe:c"
Message = TextMessage | BytesMessage
_DONE = Done()
_PROVEN = Proven()


class Link(Endpoint):
    """One backend connection; it belongs to at most one pipe (its ``owner``)."""

    SEND = SendToLink
    PAUSE = PauseLink
    RESUME = ResumeLink
    INBOUND = False

    __slots__ = ("backend", "confirm_asked", "confirm_at", "confirm_sent", "confirming",
                 "deadline", "head", "proven", "state")

    def __init__(self, ident: LinkId, backend: Backend, owner: Any, deadline: float) -> None:
        super().__init__(ident, WSConnection(ConnectionType.CLIENT), owner)
        self.backend = backend
        #: Handshake deadline while dialing/handshaking; close deadline while closing.
        self.deadline = deadline
        self.state = LinkState.DIALING
        #: Whether the backend has shown it works (a message or a pong came back). Only
        #: then does the link count as a success for the pool: a backend that accepts
        #: the upgrade and fails at once must still be ejected.
        self.proven = False
        #: The last client message a confirmation ping asked about, and whether its
        #: pong is still to come (at-least-once).
        self.confirm_asked = 0
        self.confirming = False
        #: When the last confirmation ping went out, and when the next one is due
        #: (``None``: none waiting; ``confirm_interval`` apart at least).
        self.confirm_sent = float("-inf")
        self.confirm_at: float | None = None
        #: What the backend sent while handshaking: the frames after its 101 are
        #: handed to the wire (wsproto's h11 keeps them to itself).
        self.head = b""

    @property
    def id(self) -> LinkId:
        """The link id (the driver's name for its socket)."""
        return self.ident

    def open_action(self) -> OpenLink:
        """The action that makes the driver dial the backend."""
        address = self.backend.address
        return OpenLink(self.ident, address.host, address.port, address.tls, self.backend.url,
                        address.server_name)

    def handshake(self, request: BackendRequest, flow: Flow) -> None:
        """The TCP (and TLS) connection is up: send the upgrade request."""
        self.state = LinkState.HANDSHAKING
        flow.write(self, self.ws.send(_request(self.backend, request)))

    def connect_failed(self, error: str) -> Failed | None:
        """The driver could not connect."""
        if self.state is not LinkState.DIALING:
            return None
        return Failed(LinkFailure.CONNECT, f"connect failed: {error}")

    def eof(self, error: str) -> Outcome:
        """The socket ended or failed."""
        if self.state in (LinkState.DIALING, LinkState.HANDSHAKING):
            return Failed(LinkFailure.HANDSHAKE, f"connection lost in handshake: {error}")
        if self.state is LinkState.CLOSING:
            return _DONE
        return Lost(InterruptionCause.EOF, f"connection lost: {error}")

    def receive(self, data: bytes, keepalive: Keepalive,
                flow: Flow, now: float, wire: Wire) -> Iterator[Message | Outcome]:
        """Bytes from the backend: yield its messages (fragments) and the outcomes.

        The caller stops iterating to stop reading frames (what is left stays
        buffered unparsed). Pings are answered here.
        """
        state = self.state
        if state is LinkState.DIALING:
            return
        ws = self.ws
        if state is LinkState.HANDSHAKING:
            self.head += data
        try:
            ws.receive_data(data)
        except RemoteProtocolError as exc:
            yield Failed(LinkFailure.HANDSHAKE, f"bad handshake response: {exc}")
            return
        except LocalProtocolError:
            return  # data after the close handshake: nothing to do with it
        if state is LinkState.HANDSHAKING:
            yield from self._handshake_events(keepalive, flow, now, wire)
        else:
            yield from self._frames(keepalive, flow)

    def _handshake_events(self, keepalive: Keepalive, flow: Flow, now: float,
                          wire: Wire) -> Iterator[Message | Outcome]:
        try:
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    yield self._opened(event, keepalive, now, wire)
                    yield from self._frames(keepalive, flow)
                    return
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    cause = LinkFailure.REFUSED if 400 <= status < 500 else LinkFailure.HANDSHAKE
                    yield Failed(cause, f"handshake rejected with HTTP {status}", status)
                    return
        except RemoteProtocolError as exc:
            yield Failed(LinkFailure.HANDSHAKE, f"bad handshake response: {exc}")

    def _frames(self, keepalive: Keepalive, flow: Flow) -> Iterator[Message | Outcome]:
        try:
            for event in self.ws.events():
                # Exact types: wsproto events are ABCs, so isinstance is slow per message.
                if type(event) is TextMessage or type(event) is BytesMessage:
                    if not self.proven:
                        self.proven = True
                        yield _PROVEN
                    yield event
                elif isinstance(event, Ping):
                    keepalive.answer(self, event)
                elif isinstance(event, Pong):
                    keepalive.pong(self)
                    if not self.proven:
                        self.proven = True
                        yield _PROVEN
                    payload = bytes(event.payload)
                    if payload.startswith(CONFIRM_PREFIX) and payload[8:].isdigit():
                        yield Confirmed(int(payload[8:]))
                elif isinstance(event, CloseConnection):
                    yield self._close_received(event, flow, keepalive)
                    return
        except RemoteProtocolError as exc:
            yield Failed(LinkFailure.HANDSHAKE, f"bad handshake response: {exc}")

    def _opened(self, event: AcceptConnection, keepalive: Keepalive, now: float,
                wire: Wire) -> Opened:
        self.state = LinkState.OPEN
        # The data phase is the wire's; the handshake state goes (memory per idle link).
        # The response head is the first blank line: h11 reads nothing before a 101.
        head, self.head = self.head, b""
        self.ws = wire.connection(True, head[head.index(b"\r\n\r\n") + 4:])
        keepalive.start(self, now)
        return Opened(event.subprotocol)

    def _close_received(self, event: CloseConnection, flow: Flow,
                        keepalive: Keepalive) -> Outcome:
        ws = self.ws
        if ws.state is ConnectionState.OPEN:
            # A protocol violation by the backend (wsproto's ParseFailed): we close.
            flow.write(self, ws.send(CloseConnection(code=event.code, reason=event.reason)))
            return Lost(InterruptionCause.PROTOCOL,
                        f"protocol error ({event.code}): {event.reason}")
        if self.state is LinkState.CLOSING:
            return _DONE
        # The backend closed: answer at once and write nothing more on this link.
        if ws.state is ConnectionState.REMOTE_CLOSING:
            flow.write(self, ws.send(event.response()))
        self.state = LinkState.CLOSING
        keepalive.stop(self)
        return Closed(event.code, event.reason or "")

    def close(self, code: int, reason: str, now: float, close_timeout: float,
              flow: Flow, keepalive: Keepalive) -> bool:
        """Start the close handshake if the link is open; ``False`` if it can go at once.

        A closing link is read until the backend's Close or ``close_timeout``: what
        the backend wrote before it saw our Close must still be delivered, so a link
        held for a slow client is read again (bounded by ``close_timeout``).
        """
        if self.state is LinkState.OPEN and self.ws.state in _OPENISH:
            flow.write(self, self.ws.send(CloseConnection(code=code, reason=reason)))
            if self.ws.state is ConnectionState.LOCAL_CLOSING:
                self.state = LinkState.CLOSING
                self.deadline = now + close_timeout
                keepalive.stop(self)
                flow.release(self, Hold.BACKPRESSURE)
                return True
        return False

    def tick(self, now: float, keepalive: Keepalive) -> Outcome | None:
        """A deadline of this link passed."""
        if self.state in (LinkState.DIALING, LinkState.HANDSHAKING):
            if now >= self.deadline:
                if overslept(self.deadline, now):
                    # We were not running: the connect or the backend's answer may be
                    # waiting to be read. Blaming the backend now would make a stalled
                    # proxy fail every dial at once, and retry them all together.
                    self.deadline = now + GRACE
                    return None
                return Failed(LinkFailure.TIMEOUT, "handshake timed out")
            return None
        if self.state is LinkState.CLOSING:
            return _DONE if now >= self.deadline else None
        if keepalive.tick(self, now):
            return Lost(InterruptionCause.PING_TIMEOUT, "no pong within ping_timeout")
        return None

    def next_deadline(self) -> float | None:
        """When this link must next be woken."""
        if self.state is LinkState.OPEN:
            keepalive = Keepalive.next_deadline(self)
            confirm = self.confirm_at
            if confirm is None:
                return keepalive
            return confirm if keepalive is None or confirm < keepalive else keepalive
        return self.deadline


def _request(backend: Backend, request: BackendRequest) -> Request:
    headers = [(k.encode("latin-1", "replace"), v.encode("latin-1", "replace"))
               for k, v in request.headers]
    return Request(host=backend.address.host_header, target=request.target,
                   subprotocols=list(request.subprotocols),
                   extra_headers=headers)


class Links:
    """The live links by id; hands out ids."""

    def __init__(self) -> None:
        #: The links by id.
        self.by_id: dict[LinkId, Link] = {}
        self._next = 1

    def new(self, backend: Backend, owner: Any, deadline: float) -> Link:
        """A new link to ``backend`` for ``owner``, dialing until ``deadline``."""
        link = Link(self._next, backend, owner, deadline)
        self._next += 1
        self.by_id[link.ident] = link
        return link

    def get(self, ident: LinkId) -> Link | None:
        return self.by_id.get(ident)

    def forget(self, link: Link) -> bool:
        """Remove ``link``; ``False`` if it was already gone."""
        return self.by_id.pop(link.ident, None) is not None

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[Link]:
        return iter(list(self.by_id.values()))
