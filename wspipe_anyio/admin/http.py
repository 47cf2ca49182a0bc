"""HTTP/1.1 plumbing of the admin listener: h11 over anyio, bounded in size, count and time.

:class:`HttpServer` accepts connections, parses requests with h11 and asks an
:class:`Application` for the handler of each one. The application answers
before the body is read (so a refused request never has its body read), then
the handler runs with the body in :attr:`Request.body` and returns a
:class:`Reply`. Anything may raise a :class:`Reply` to answer at once; errors
are JSON ``{"detail": "..."}`` and are logged with the reason.
"""

from __future__ import annotations

import ipaddress
import json
import logging
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
#: Largest request head (h11's limit); over it: 431.
MAX_HEAD = 16 * 1024
#: Time a peer has to send one request (head and body); then the connection is closed.
REQUEST_TIMEOUT = 10.0
#: Requests served on one keep-alive connection before it is closed.
MAX_REQUESTS_PER_CONNECTION = 1000
#: Connections served at once; more wait in the listen backlog.
MAX_CONNECTIONS = 64
#: Pause after a failed ``accept()`` (e.g. out of file descriptors).
ACCEPT_RETRY_DELAY = 0.1

#: Reason phrases of the statuses the admin API answers with.
REASONS = {200: b"OK", 201: b"Created", 202: b"Accepted", 400: b"Bad Request",
           401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
           405: b"Method Not Allowed", 408: b"Request Timeout", 409: b"Conflict",
           413: b"Content Too Large", 431: b"Request Header Fields Too Large",
           500: b"Internal Server Error", 501: b"Not Implemented",
           503: b"Service Unavailable"}


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

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


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


#: What handles one request once its body is read.
Handler = Callable[[Request], Reply]


class Application(Protocol):
    """What an :class:`HttpServer` serves."""

    def route(self, request: Request) -> Handler:
        """The handler of ``request`` (its body is not read yet).

        :raises Reply: To answer without reading the body (401, 404, 405, ...).
        """
        ...


class HttpServer:
    """An HTTP/1.1 listener serving one :class:`Application`.

    Use it as an async context manager (binds and serves in the background until
    the block ends) or start it in a task group with ``await tg.start(server.run)``.

    :param app: Routes each request to its handler.
    :param host: Listen address.
    :param port: Listen port (0 picks a free one; see :attr:`port`).
    :param max_body: Largest request body (413 over it).
    :param request_timeout: Time a peer has to send one request (408 after it).
    """

    def __init__(self, app: Application, *, host: str = "127.0.0.1", port: int = 0,
                 max_body: int = MAX_BODY, request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.app = app
        self.host = host
        self._port = port
        self._max_body = max_body
        self._request_timeout = request_timeout
        self._listeners: list[SocketListener] = []
        self._tg: TaskGroup | None = None
        self._slots: anyio.Semaphore | None = None  # anyio objects need a running loop

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

    async def __aenter__(self) -> Self:
        self._slots = anyio.Semaphore(MAX_CONNECTIONS)
        multi = await anyio.create_tcp_listener(local_host=self.host, local_port=self._port)
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

    async def _accept_loop(self, listener: SocketListener) -> None:
        assert self._tg is not None and self._slots is not None
        while True:
            await self._slots.acquire()
            try:
                stream = await listener.accept()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._slots.release()
                return
            except OSError as exc:
                self._slots.release()
                log.warning("admin accept failed: %s", exc)
                await anyio.sleep(ACCEPT_RETRY_DELAY)
                continue
            self._tg.start_soon(self._serve_connection, stream)

    # One connection: h11 request/response cycles, keep-alive, bounded in count and time.

    async def _serve_connection(self, stream: SocketStream) -> None:
        peer = str(stream.extra(SocketAttribute.remote_address, ("?", 0))[0])
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            for _ in range(MAX_REQUESTS_PER_CONNECTION):
                with anyio.move_on_after(self._request_timeout) as scope:
                    keep = await self._serve_one(conn, stream, peer)
                if scope.cancelled_caught:
                    log.info("admin connection from %s: no complete request within %.0fs; "
                             "closed", peer, self._request_timeout)
                    partial = conn.their_state is not h11.IDLE or conn.trailing_data[0]
                    if partial and conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                        await self._send(conn, stream, error(408, "request timed out"))
                    return
                if not keep or conn.our_state is not h11.DONE or \
                        conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream,
                OSError):
            pass
        except h11.LocalProtocolError as exc:
            log.debug("admin connection from %s: %s", peer, exc)
        finally:
            await anyio.aclose_forcefully(stream)
            assert self._slots is not None
            self._slots.release()

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

    async def _serve_one(self, conn: h11.Connection, stream: SocketStream, peer: str) -> bool:
        """Serve one request; ``True`` to keep the connection for another."""
        try:
            event = await self._receive(conn, stream)
        except h11.RemoteProtocolError as exc:
            status = 431 if exc.error_status_hint == 431 else 400
            detail = ("request head too large" if status == 431
                      else f"malformed HTTP request: {exc}")
            log.warning("admin request from %s -> %d: %s", peer, status, detail)
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await self._send(conn, stream, error(status, detail), close=True)
            return False
        if not isinstance(event, h11.Request):
            return False  # ConnectionClosed or EOF between requests
        request = _request(event, peer)
        reply = await self._handle(conn, stream, request)
        level = logging.WARNING if reply.status >= 400 else (
            logging.INFO if request.method in ("POST", "DELETE") else logging.DEBUG)
        if reply.log_reason is not None or log.isEnabledFor(level):
            log.log(level, "admin %s %s from %s -> %d%s", request.method, request.path, peer,
                    reply.status, f": {reply.log_reason}" if reply.log_reason else "")
        # A body we did not read (rejected early) leaves the stream unusable: close it.
        close = conn.their_state is not h11.DONE
        await self._send(conn, stream, reply, close=close)
        return not close and conn.our_state is h11.DONE

    async def _handle(self, conn: h11.Connection, stream: SocketStream,
                      request: Request) -> Reply:
        try:
            handler = self.app.route(request)
            if conn.their_state is h11.SEND_BODY:
                # Read (bounded) even a body the handler ignores, to keep the connection.
                await self._read_body(conn, stream, request)
            return handler(request)
        except Reply as reply:
            return reply
        except Exception:
            log.exception("admin %s %s: internal error", request.method, request.path)
            return error(500, "internal error (see the proxy's log)")

    async def _read_body(self, conn: h11.Connection, stream: SocketStream,
                         request: Request) -> None:
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
        if reply.content_type == "application/json":
            body = (json.dumps(reply.body, indent=None) + "\n").encode()
        else:
            body = reply.body if isinstance(reply.body, bytes) else str(reply.body).encode()
        headers = [("content-type", reply.content_type), ("content-length", str(len(body))),
                   ("cache-control", "no-store"), *reply.headers]
        if close and not any(k == "connection" for k, _ in headers):
            headers.append(("connection", "close"))
        data = conn.send(h11.Response(status_code=reply.status, headers=headers,
                                      reason=REASONS.get(reply.status, b"")))
        data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send(data)


def _request(event: h11.Request, peer: str) -> Request:
    target = event.target.decode("latin-1")
    parts = urlsplit(target)
    return Request(event.method.decode("ascii", "replace").upper(), target,
                   unquote(parts.path) or "/", parts.query, list(event.headers), peer)
