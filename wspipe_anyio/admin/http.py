"""HTTP/1.1 plumbing of the admin listener: h11 over anyio, bounded in size, count and time.

:class:`HttpServer` accepts connections, parses requests with h11 and asks an
:class:`Application` for the :class:`Route` of each one. The application answers
before the body is read (so a refused request never has its body read), then
the handler runs (with the body in :attr:`Request.body` when the route reads it)
and returns a :class:`Reply`. Anything may raise a :class:`Reply` to answer at
once; errors are JSON ``{"detail": "..."}`` and are logged with the reason.

A few idle or slow sockets cannot stall the listener: accepting never waits, a
request head must be complete within :data:`HEAD_TIMEOUT` and the whole request
answered within :data:`REQUEST_TIMEOUT`, and over :data:`MAX_CONNECTIONS` a new
connection closes the oldest *idle* one (no request in progress) instead of
waiting in the backlog. Every connection is served by its own task, so a probe
never waits behind another connection's request.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, cast
from urllib.parse import unquote, urlsplit

import anyio
import h11
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup, TaskStatus

log = logging.getLogger("wspipe.admin")

#: Largest request body accepted; over it: 413.
MAX_BODY = 64 * 1024
#: Largest request head (request line and headers); over it: 431, whatever the chunking.
MAX_HEAD = 16 * 1024
#: Time a request head has to arrive complete: from accept on a new connection, from
#: its first byte on a kept-alive one. A connection that sends nothing is closed then.
HEAD_TIMEOUT = 2.0
#: Time from the first byte of a request to the end of its answer (body included).
REQUEST_TIMEOUT = 5.0
#: Time a kept-alive connection may wait for its next request.
IDLE_TIMEOUT = 5.0
#: Requests served on one keep-alive connection before it is closed.
MAX_REQUESTS_PER_CONNECTION = 1000
#: Connections kept open at once; a new one over it closes the oldest idle one.
MAX_CONNECTIONS = 64
#: Connections served over :data:`MAX_CONNECTIONS` while none is idle (every one has
#: a request in progress, each bounded by :data:`REQUEST_TIMEOUT`); beyond, a new
#: connection is closed at once.
CONNECTION_RESERVE = 16
#: After an answer that closes a connection with unread input (a refused body), time
#: spent reading and discarding it so that closing does not reset the answer away.
LINGER = 0.5
#: Most input bytes discarded while lingering.
LINGER_BYTES = 256 * 1024
#: Pause after a failed ``accept()`` (e.g. out of file descriptors).
ACCEPT_RETRY_DELAY = 0.1
#: Least time between two log lines about connections closed to make room.
EVICTION_LOG_INTERVAL = 1.0

#: Reason phrases of the statuses the admin API answers with.
REASONS = {200: b"OK", 201: b"Created", 202: b"Accepted", 400: b"Bad Request",
           401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
           405: b"Method Not Allowed", 408: b"Request Timeout", 409: b"Conflict",
           413: b"Content Too Large", 415: b"Unsupported Media Type",
           421: b"Misdirected Request", 431: b"Request Header Fields Too Large",
           500: b"Internal Server Error", 501: b"Not Implemented",
           503: b"Service Unavailable"}

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe for a log line or a detail: control characters escaped, truncated."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Request:
    """One HTTP request: method, target split into path and query, headers, body."""

    method: str
    target: str
    #: The percent-decoded path.
    path: str
    query: str
    #: Header names are lower-case bytes (as h11 gives them).
    headers: list[tuple[bytes, bytes]]
    #: The peer's address, for logs.
    peer: str
    #: The body, once read (empty before the handler runs or when there is none).
    body: bytes = b""
    #: The local address the peer connected to (one of this listener's own names).
    local: str = ""

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def has_body(self) -> bool:
        """Whether the request announces a body (``Content-Length`` > 0 or chunked)."""
        length = self.header(b"content-length")
        if length is not None:
            return length.strip() not in (b"0", b"")
        return self.header(b"transfer-encoding") is not None


class Reply(Exception):
    """An HTTP answer, returned by a handler or raised from anywhere in one.

    :param body: JSON-serialisable for ``application/json``, else bytes or text.
    :param log_reason: Why, for the log line of an error answer.
    """

    def __init__(self, status: int, body: Any, *, content_type: str = "application/json",
                 headers: Iterable[tuple[str, str]] = (), log_reason: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = list(headers)
        self.log_reason = log_reason


def error(status: int, detail: str, **kwargs: Any) -> Reply:
    """A JSON error answer ``{"detail": detail}``, logged with ``detail``."""
    return Reply(status, {"detail": detail}, log_reason=detail, **kwargs)


#: What handles one request once its head (and, if the route says so, its body) is read.
Handler = Callable[[Request], Reply]


@dataclass(frozen=True)
class Route:
    """The handler of a request, and whether it needs the body."""

    handler: Handler
    #: Read the body (bounded by ``max_body``) into :attr:`Request.body` first. A
    #: route that does not never reads it: the connection closes after the answer.
    reads_body: bool = False


class Application(Protocol):
    """What an :class:`HttpServer` serves."""

    def route(self, request: Request) -> Route:
        """The route of ``request`` (its body is not read yet).

        :raises Reply: To answer without reading the body (401, 404, 405, ...).
        """
        ...


class _Connection:
    """One accepted socket, as the connection cap sees it."""

    __slots__ = ("busy", "idle_since", "peer", "scope", "stream", "unread")

    def __init__(self, stream: SocketStream, peer: str, now: float) -> None:
        self.stream = stream
        self.peer = peer
        #: Cancelled to close the connection (evicted to make room, or server stopping).
        self.scope = anyio.CancelScope()
        #: A request head is complete and its answer is not sent yet.
        self.busy = False
        #: Since when it has had no request in progress (accept or end of last answer).
        self.idle_since = now
        #: The last answer left input unread (a refused body): linger before closing.
        self.unread = False


class HttpServer:
    """An HTTP/1.1 listener serving one :class:`Application`.

    Use it as an async context manager (binds and serves in the background until
    the block ends) or start it in a task group with ``await tg.start(server.run)``.

    :param app: Routes each request.
    :param host: Listen address.
    :param port: Listen port (0 picks a free one; see :attr:`port`).
    :param max_body: Largest request body (413 over it).
    :param request_timeout: Time from a request's first byte to its answer (408 after it).
    :param head_timeout: Time for a request head to be complete (408, or a silent
        close for a connection that sent nothing).
    :param idle_timeout: Time a kept-alive connection may wait for its next request.
    :param max_connections: Connections kept open; over it the oldest idle one is closed.
    """

    def __init__(self, app: Application, *, host: str = "127.0.0.1", port: int = 0,
                 max_body: int = MAX_BODY, request_timeout: float = REQUEST_TIMEOUT,
                 head_timeout: float = HEAD_TIMEOUT, idle_timeout: float = IDLE_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS, reuse_port: bool = False) -> None:
        self._reuse_port = reuse_port
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self.app = app
        self.host = host
        self._port = port
        self._max_body = max_body
        self._request_timeout = request_timeout
        self._head_timeout = min(head_timeout, request_timeout)
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._listeners: list[SocketListener] = []
        self._tg: TaskGroup | None = None
        self._connections: dict[int, _Connection] = {}
        self._evicted = 0
        self._eviction_logged_at = float("-inf")

    # Lifecycle.

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port), after start."""
        assert self._listeners, "the HTTP server is not started"
        address = self._listeners[0].extra(SocketAttribute.local_address)
        assert isinstance(address, tuple)
        return str(address[0]), int(address[1])

    @property
    def port(self) -> int:
        """The bound port, after start."""
        return self.address[1]

    @property
    def url(self) -> str:
        """``http://host:port`` of the bound listener."""
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    @property
    def open_connections(self) -> int:
        """Connections open now."""
        return len(self._connections)

    async def __aenter__(self) -> Self:
        multi = await anyio.create_tcp_listener(local_host=self.host, local_port=self._port,
                                                reuse_port=self._reuse_port)
        self._listeners = list(cast(list[SocketListener], multi.listeners))
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        for listener in self._listeners:
            tg.start_soon(self._accept_loop, listener)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            for listener in self._listeners:
                await listener.aclose()

    async def run(self, *, task_status: TaskStatus[Self] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind, report ``self`` to ``tg.start()``, serve until cancelled."""
        async with self:
            task_status.started(self)
            await anyio.sleep_forever()

    # Accepting: never waits for a slot; over the cap the oldest idle connection goes.

    async def _accept_loop(self, listener: SocketListener) -> None:
        assert self._tg is not None
        while True:
            try:
                stream = await listener.accept()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            except OSError as exc:
                log.warning("admin accept failed: %s", exc)
                await anyio.sleep(ACCEPT_RETRY_DELAY)
                continue
            peer = str(stream.extra(SocketAttribute.remote_address, ("?", 0))[0])
            if not self._make_room(peer):
                await anyio.aclose_forcefully(stream)
                continue
            connection = _Connection(stream, peer, anyio.current_time())
            self._connections[id(connection)] = connection
            self._tg.start_soon(self._serve_connection, connection)

    def _make_room(self, peer: str) -> bool:
        """Make room for a new connection from ``peer``; ``False`` to refuse it."""
        if len(self._connections) < self._max_connections:
            return True
        idle = [c for c in self._connections.values() if not c.busy]
        if idle:
            oldest = min(idle, key=lambda c: c.idle_since)
            del self._connections[id(oldest)]
            oldest.scope.cancel()
            self._log_eviction(f"closed the oldest idle admin connection (from {oldest.peer}, "
                               f"idle {anyio.current_time() - oldest.idle_since:.1f}s) to "
                               f"make room for one from {peer}")
            return True
        if len(self._connections) < self._max_connections + CONNECTION_RESERVE:
            return True
        self._log_eviction(f"refused an admin connection from {peer}: "
                           f"{len(self._connections)} connections have a request in progress")
        return False

    def _log_eviction(self, message: str) -> None:
        # A flood of connections must not become a flood of log lines: one per interval.
        self._evicted += 1
        now = anyio.current_time()
        if now - self._eviction_logged_at >= EVICTION_LOG_INTERVAL:
            more = f" ({self._evicted - 1} more like it since the last line)" \
                if self._evicted > 1 else ""
            log.warning("admin: %s; at most %d connections%s", message,
                        self._max_connections, more)
            self._evicted = 0
            self._eviction_logged_at = now

    # One connection: h11 request/response cycles, keep-alive, bounded in count and time.

    async def _serve_connection(self, connection: _Connection) -> None:
        stream = connection.stream
        local = stream.extra(SocketAttribute.local_address, ("", 0))
        local_host = str(local[0]) if isinstance(local, tuple) else ""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            with connection.scope:
                for number in range(MAX_REQUESTS_PER_CONNECTION):
                    keep = await self._serve_one(conn, connection, local_host, first=number == 0)
                    if not keep:
                        break
                    conn.start_next_cycle()
                if connection.unread:
                    await self._linger(connection)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream,
                OSError):
            pass
        except h11.LocalProtocolError as exc:
            log.debug("admin connection from %s: %s", connection.peer, exc)
        finally:
            self._connections.pop(id(connection), None)
            await anyio.aclose_forcefully(stream)

    async def _linger(self, connection: _Connection) -> None:
        """Half-close, then discard input (bounded) so that closing does not reset the
        answer before the peer has read it."""
        connection.busy = False
        with anyio.move_on_after(LINGER), contextlib.suppress(anyio.EndOfStream):
            await connection.stream.send_eof()
            discarded = 0
            while discarded < LINGER_BYTES:
                discarded += len(await connection.stream.receive(65536))

    async def _serve_one(self, conn: h11.Connection, connection: _Connection, local: str,
                         *, first: bool) -> bool:
        """Serve one request; ``True`` to keep the connection for another."""
        stream, peer = connection.stream, connection.peer
        started = anyio.current_time()
        scope = anyio.CancelScope(
            deadline=started + (self._head_timeout if first else self._idle_timeout))
        phase = "idle"
        with scope:
            try:
                event = await self._read_head(conn, stream, scope)
            except h11.RemoteProtocolError as exc:
                status = 431 if exc.error_status_hint == 431 else 400
                detail = ("request head over the 16 KiB limit" if status == 431
                          else f"malformed HTTP request: {printable(str(exc))}")
                log.warning("admin request from %s -> %d: %s", peer, status, detail)
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(conn, stream, error(status, detail), close=True)
                connection.unread = True
                return False
            if not isinstance(event, h11.Request):
                return False  # ConnectionClosed or EOF between requests
            phase = "request"
            connection.busy = True
            request = _request(event, peer, local)
            reply = await self._handle(conn, stream, request)
            self._log(request, reply)
            # Input we did not read (a refused or ignored body) leaves the stream unusable.
            close = conn.their_state is not h11.DONE
            connection.unread = close
            await self._send(conn, stream, reply, close=close)
            connection.busy = False
            connection.idle_since = anyio.current_time()
            return not close and conn.our_state is h11.DONE
        connection.busy = False
        # The deadline passed.
        if phase == "idle" and not conn.trailing_data[0] and conn.their_state is h11.IDLE:
            log.debug("admin connection from %s: no request within %.1fs; closed", peer,
                      scope.deadline - started)
            return False
        log.warning("admin request from %s -> 408: not complete within %.1fs; closed", peer,
                    scope.deadline - started)
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with anyio.move_on_after(LINGER):
                await self._send(conn, stream, error(408, "request timed out"), close=True)
            connection.unread = True
        return False

    async def _read_head(self, conn: h11.Connection, stream: SocketStream,
                         scope: anyio.CancelScope) -> Any:
        """The next h11 event of a new cycle (a Request, or ConnectionClosed).

        :raises h11.RemoteProtocolError: Malformed, or a head over :data:`MAX_HEAD`
            (hint 431) however it was chunked.
        """
        fed = len(conn.trailing_data[0])  # pipelined bytes left by the previous cycle
        first_byte_at: float | None = anyio.current_time() if fed else None
        if first_byte_at is not None:
            scope.deadline = min(scope.deadline, first_byte_at + self._head_timeout)
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                break
            try:
                data = await stream.receive(65536)
            except anyio.EndOfStream:
                data = b""
            if data and first_byte_at is None:
                first_byte_at = anyio.current_time()
                scope.deadline = min(scope.deadline, first_byte_at + self._head_timeout)
            fed += len(data)
            conn.receive_data(data)
        if isinstance(event, h11.Request):
            head = fed - len(conn.trailing_data[0])
            if head > MAX_HEAD:
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
            scope.deadline = (first_byte_at or anyio.current_time()) + self._request_timeout
        return event

    async def _receive(self, conn: h11.Connection, stream: SocketStream) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await stream.receive(65536)
            except anyio.EndOfStream:
                data = b""
            conn.receive_data(data)

    async def _handle(self, conn: h11.Connection, stream: SocketStream,
                      request: Request) -> Reply:
        try:
            route = self.app.route(request)
            if route.reads_body:
                await self._read_body(conn, stream, request)
            elif conn.their_state is h11.SEND_BODY and not request.has_body:
                conn.next_event()  # the EndOfMessage of an empty body: keep-alive stays
            return route.handler(request)
        except Reply as reply:
            return reply
        except Exception:
            log.exception("admin %s %s: internal error", request.method,
                          printable(request.path))
            return error(500, "internal error (see the proxy's log)")

    def _log(self, request: Request, reply: Reply) -> None:
        level = logging.WARNING if reply.status >= 400 else (
            logging.INFO if request.method in ("POST", "DELETE") else logging.DEBUG)
        if reply.log_reason is not None or log.isEnabledFor(level):
            reason = f": {printable(reply.log_reason, 500)}" if reply.log_reason else ""
            log.log(level, "admin %s %s from %s -> %d%s", printable(request.method, 20),
                    printable(request.path), request.peer, reply.status, reason)

    async def _read_body(self, conn: h11.Connection, stream: SocketStream,
                         request: Request) -> None:
        if conn.their_state is not h11.SEND_BODY:
            return
        length = request.header(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            raise error(413, f"request body of {int(length)} bytes is over the "
                             f"{self._max_body}-byte limit", headers=[("connection", "close")])
        if conn.they_are_waiting_for_100_continue:
            await stream.send(conn.send(h11.InformationalResponse(status_code=100,
                                                                  headers=[])) or b"")
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._receive(conn, stream)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self._max_body:
                    raise error(413, f"request body over the {self._max_body}-byte limit",
                                headers=[("connection", "close")])
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                request.body = b"".join(chunks)
                return
            else:
                raise error(400, "request body ended early")

    async def _send(self, conn: h11.Connection, stream: SocketStream, reply: Reply,
                    close: bool = False) -> None:
        status = reply.status
        if reply.content_type == "application/json":
            try:  # strict JSON: no NaN or Infinity, ever
                body = (json.dumps(reply.body, indent=None, allow_nan=False) + "\n").encode()
            except (ValueError, TypeError) as exc:
                log.error("admin answer %d is not representable as JSON: %s", status, exc)
                status = 500
                body = b'{"detail": "internal error: the answer is not valid JSON"}\n'
        else:
            body = reply.body if isinstance(reply.body, bytes) else str(reply.body).encode()
        headers = [("content-type", reply.content_type), ("content-length", str(len(body))),
                   ("cache-control", "no-store"), ("x-content-type-options", "nosniff"),
                   *reply.headers]
        if close and not any(k == "connection" for k, _ in headers):
            headers.append(("connection", "close"))
        data = conn.send(h11.Response(status_code=status, headers=headers,
                                      reason=REASONS.get(status, b"")))
        data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send(data)


def _request(event: h11.Request, peer: str, local: str) -> Request:
    target = event.target.decode("latin-1")
    parts = urlsplit(target)
    return Request(event.method.decode("ascii", "replace").upper(), target,
                   unquote(parts.path) or "/", parts.query, list(event.headers), peer,
                   local=local)
