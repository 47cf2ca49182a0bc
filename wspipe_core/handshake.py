"""The client before the upgrade: pending connections, parsing, every refusal over HTTP.

A client connection is *pending* from ``ClientConnected`` until its upgrade request
is complete; idle pending connections are bounded per peer and in all (the oldest
makes room, see :class:`Handshakes`). Then :meth:`Handshakes.admit` runs every check — shutdown and
``max_connections`` (503), the client id (400), a live pipe with that id (409), the
auth hook (401/403) — and either refuses over HTTP with a one-line body or hands
the session an :class:`Upgrade` to accept.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

from wsproto import ConnectionType, WSConnection
from wsproto.events import RejectConnection, Request
from wsproto.utilities import RemoteProtocolError

from .actions import CloseClient, SendToClient
from .config import ProxyConfig
from .deadlines import Timers
from .events import ClientConnected, ConnId
from .flow import Flow
from .hooks import Hooks
from .info import Reject, RequestInfo
from .stats import Stats

log = logging.getLogger("wspipe")


@dataclass(eq=False)
class PendingClient:
    """A client connection whose upgrade request is not complete yet."""

    conn: ConnId
    peer: str
    tls: bool
    #: Must complete its upgrade request by then.
    deadline: float
    ws: WSConnection = field(default_factory=lambda: WSConnection(ConnectionType.SERVER))
    #: Bytes received so far (for the 431 limit).
    received: int = 0
    #: The first bytes received, up to the head limit (to measure the request head).
    start: bytearray = field(default_factory=bytearray)

    def next_deadline(self) -> float:
        return self.deadline


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A complete upgrade request that passed every check: the session accepts it."""

    conn: ConnId
    peer: str
    tls: bool
    #: The server-side wsproto connection, ready to send ``AcceptConnection``.
    ws: WSConnection
    request: RequestInfo
    client_id: str
    #: Bytes that came right after the request (frames sent before our answer).
    early: bytes = b""
    #: Who the auth hook says the client is (``Accept.principal``), if it said.
    principal: str | None = None
    #: Whether it takes over the session its client id already has (parked, or whose
    #: connection is suspected dead) instead of starting one.
    resumes: bool = False


class Claim(enum.Enum):
    """What a client id's current session means for a new connection with that id."""

    #: No session has it: a new one starts.
    FREE = "free"
    #: A session whose client is connected and answering has it: 409.
    BUSY = "busy"
    #: A parked session has it, or one whose connection is suspected dead: take it over.
    RESUMABLE = "resumable"


def http_error(status: int, reason: str) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response with ``reason`` as one-line body.

    Written by hand because it must also answer requests that h11 (and so wsproto)
    could not parse, when no wsproto state machine can produce a response. A 426
    names the version we speak (``Sec-WebSocket-Version: 13``, RFC 6455 4.4).
    """
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    line = " ".join(reason.split())[:200] if reason else phrase
    body = (line + "\n").encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        + ("sec-websocket-version: 13\r\n" if status == 426 else "")
        + "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def request_info(request: Request, peer: str, tls: bool) -> RequestInfo:
    """Build the hook-facing snapshot of a wsproto ``Request``."""
    path, _, query = request.target.partition("?")
    headers = [("host", request.host)]
    for name, value in request.extra_headers:
        key = name.decode("latin-1") if isinstance(name, bytes) else name
        val = value.decode("latin-1") if isinstance(value, bytes) else value
        headers.append((key.lower(), val))
    if request.subprotocols:
        headers.append(("sec-websocket-protocol", ", ".join(request.subprotocols)))
    return RequestInfo(
        target=request.target,
        path=path,
        query=query,
        headers=tuple(headers),
        subprotocols=tuple(request.subprotocols),
        peer=peer,
        tls=tls,
    )


def allowed_subprotocols(offered: tuple[str, ...],
                         allowed: tuple[str, ...] | None) -> tuple[str, ...]:
    """The subprotocols the client offered that the configuration lets through, in order."""
    if allowed is None or "*" in allowed:
        return offered
    return tuple(p for p in offered if p in allowed)


class Handshakes:
    """The pending client connections, until each is refused or becomes an :class:`Upgrade`.

    Pending connections are bounded so that idle sockets cannot lock real clients
    out: at most ``max_pending_per_peer`` from one peer address and
    ``max_pending_handshakes`` in all. A new connection over either bound is not
    refused; the *oldest* pending connection of that peer (or of all) is closed with
    408 to make room, so a client that completes its request promptly always gets in
    while idle sockets come and go.
    """

    def __init__(self, config: ProxyConfig, hooks: Hooks, flow: Flow, timers: Timers,
                 stats: Stats) -> None:
        self._config = config
        self._hooks = hooks
        self._flow = flow
        self._timers = timers
        self._stats = stats
        #: In arrival order: the first is the oldest.
        self._pending: dict[ConnId, PendingClient] = {}
        self._by_peer: dict[str, dict[ConnId, PendingClient]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, conn: ConnId) -> bool:
        return conn in self._pending

    def get(self, conn: ConnId) -> PendingClient | None:
        return self._pending.get(conn)

    def connected(self, event: ClientConnected, now: float, shutting_down: bool) -> None:
        """A client connection was accepted: wait for its request (making room if needed)."""
        if shutting_down:
            log.warning("client conn %s from %s refused with 503: proxy is shutting down",
                        event.conn, event.peer)
            self._stats.clients_rejected[503] += 1
            self._flow.out.append(SendToClient(event.conn,
                                               http_error(503, "proxy is shutting down")))
            self._flow.out.append(CloseClient(event.conn))
            return
        cfg = self._config
        same_peer = self._by_peer.get(event.peer)
        if same_peer is not None and len(same_peer) >= cfg.max_pending_per_peer:
            self.refuse(next(iter(same_peer.values())), 408,
                        f"upgrade request not completed: more than {cfg.max_pending_per_peer} "
                        f"pending from {event.peer}, the oldest is closed")
        elif len(self._pending) >= cfg.max_pending_handshakes:
            self.refuse(next(iter(self._pending.values())), 408,
                        f"upgrade request not completed: more than {cfg.max_pending_handshakes} "
                        "pending handshakes, the oldest is closed")
        client = PendingClient(event.conn, event.peer, event.tls,
                               now + cfg.handshake_timeout)
        self._pending[event.conn] = client
        self._by_peer.setdefault(event.peer, {})[event.conn] = client
        self._timers.touch(client)

    def receive(self, client: PendingClient, data: bytes) -> tuple[Request, bytes] | None:
        """Bytes of the upgrade request: once it is complete and within limits, the request
        and the bytes that came after it (frames the client sent without waiting)."""
        client.received += len(data)
        limit = self._config.max_header_size
        window = bytes(client.start) + data
        if len(client.start) < limit + 4:
            client.start += data[:limit + 4 - len(client.start)]
        try:
            client.ws.receive_data(data)
            for event in client.ws.events():
                if isinstance(event, Request):
                    # h11 bounds only an *incomplete* head: a complete one that came
                    # in a single read is parsed whatever its size, so measure it (and
                    # only it: frames sent too early do not count).
                    end = window.find(b"\r\n\r\n")
                    if end < 0 or end + 4 > limit:
                        self.refuse(client, 431, "request headers too large")
                        return None
                    version = window[:window.find(b"\r\n")].rsplit(b" ", 1)[-1]
                    if version != b"HTTP/1.1":
                        # RFC 6455 4.1: the upgrade needs HTTP/1.1 (h11 also parses 1.0).
                        self.refuse(client, 400, "malformed upgrade request: a WebSocket "
                                    f"upgrade needs HTTP/1.1, got {version.decode('latin-1')}")
                        return None
                    client.start = bytearray()
                    return event, window[end + 4:]
        except RemoteProtocolError as exc:
            if client.received > limit:
                self.refuse(client, 431, "request headers too large")
                return None
            hint = exc.event_hint
            status = hint.status_code if isinstance(hint, RejectConnection) else 400
            if status == 426:
                reason = "unsupported Sec-WebSocket-Version: this proxy speaks version 13"
            else:
                reason = f"malformed upgrade request: {exc}"
            self.refuse(client, status, reason)
            return None
        if client.received > limit:
            self.refuse(client, 431, "request headers too large")
        return None

    def admit(self, client: PendingClient, request: Request, early: bytes, *, pipes: int,
              shutting_down: bool,
              claim: Callable[[str], tuple[Claim, str | None]]) -> Upgrade | None:
        """Run every check on a complete request: the :class:`Upgrade`, or ``None`` (refused).

        ``claim(client_id)`` says what the id's current session is, and its principal.
        A connection resuming a session passes the same auth hook and, when the session
        has a principal, must be that principal (403 otherwise); the session is left as
        it was by every refusal.
        """
        cfg = self._config
        info = request_info(request, client.peer, client.tls)
        if shutting_down:
            self.refuse(client, 503, "proxy is shutting down")
            return None
        client_id = self._hooks.client_id(info)
        if client_id is None:
            self.refuse(client, 400, f"bad client id: path {info.path!r} must be /<uuid>")
            return None
        status, owner = claim(client_id)
        if status is Claim.BUSY:
            self.refuse(client, 409, f"client id {client_id} is already connected")
            return None
        if status is Claim.FREE and pipes >= cfg.max_connections:
            self.refuse(client, 503, f"over max_connections ({cfg.max_connections})")
            return None
        verdict = self._hooks.authenticate(info, client_id)
        if isinstance(verdict, Reject):
            self.refuse(client, verdict.status, verdict.reason)
            return None
        principal = verdict.principal if verdict is not None else None
        if status is Claim.RESUMABLE and owner is not None and principal != owner:
            self.refuse(client, 403, f"client id {client_id} belongs to another principal: "
                        "its session cannot be resumed by this one")
            return None
        self._drop(client)
        return Upgrade(client.conn, client.peer, client.tls, client.ws, info, client_id, early,
                       principal, status is Claim.RESUMABLE)

    def refuse(self, client: PendingClient, status: int, reason: str) -> None:
        """Answer ``status`` with ``reason`` as the body, and close."""
        log.warning("client conn %s from %s refused with %d: %s", client.conn, client.peer,
                    status, reason)
        self._stats.clients_rejected[status] += 1
        self._flow.out.append(SendToClient(client.conn, http_error(status, reason)))
        self.forget(client)

    def forget(self, client: PendingClient) -> None:
        """Close a pending connection without an answer (it went away, or shutdown)."""
        self._drop(client)
        self._flow.out.append(CloseClient(client.conn))

    def went_away(self, client: PendingClient) -> None:
        """The client's socket ended before its request was complete."""
        log.info("client conn %s from %s went away during the handshake", client.conn,
                 client.peer)
        self.forget(client)

    def tick(self, client: PendingClient, now: float) -> None:
        """The handshake deadline of ``client`` passed."""
        if self._pending.get(client.conn) is client and now >= client.deadline:
            self.refuse(client, 408, "upgrade request not completed within handshake_timeout")

    def shutdown(self) -> None:
        """Close every pending connection."""
        for client in list(self._pending.values()):
            self.forget(client)

    def _drop(self, client: PendingClient) -> None:
        del self._pending[client.conn]
        same_peer = self._by_peer[client.peer]
        del same_peer[client.conn]
        if not same_peer:
            del self._by_peer[client.peer]
        self._timers.cancel(client)
