"""The admin listener: a small JSON-over-HTTP control plane for a running proxy.

A separate listener from the client one, served with h11 on anyio (asyncio or
trio). It reads and changes the pool at runtime, lists pipes, drains backends
(optionally moving their pipes to other backends at a bounded rate) and exposes
Prometheus metrics and health checks::

    GET    /healthz                      200 while the process serves (no token)
    GET    /readyz                       200 if a backend is up (and not shutting down),
                                         else 503 (no token)
    GET    /backends                     [{id, url, state, pipes, errors, weight, ...}]
    POST   /backends  {"url", "weight"}  201 backend | 400 invalid | 409 duplicate
    DELETE /backends/{id}?migrate=BOOL   202 draining | 404 unknown
    GET    /pipes                        [{id, client_id, backend_id, state, ...}]
    GET    /pipes/{id}                   200 pipe | 404 unknown
    GET    /metrics                      Prometheus text exposition

Every other endpoint needs ``Authorization: Bearer <token>`` (401 without, 403
with a wrong one). Errors are JSON ``{"detail": "..."}`` and are logged with
the reason; the token and the Authorization header are never logged.

The server drives anything satisfying :class:`AdminTarget`; :func:`server_target`
adapts a :class:`~wspipe_anyio.ProxyServer`.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio
import h11
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup, TaskStatus

from wspipe_core import (
    BackendAlreadyRegistered,
    BackendInfo,
    BackendState,
    InvalidBackendURL,
    PipeInfo,
    PipeState,
    Proxy,
    UnknownBackend,
)

from .units import parse_address

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("wspipe.admin")

#: Largest request body accepted (POST /backends); over it: 413.
MAX_BODY = 64 * 1024
#: Largest request head (h11's limit); over it: 431.
MAX_HEAD = 16 * 1024
#: Time a peer has to send one request (head and body); then the connection is closed.
REQUEST_TIMEOUT = 10.0
#: Requests served on one keep-alive connection before it is closed.
MAX_REQUESTS_PER_CONNECTION = 1000
#: Admin connections served at once; more wait in the listen backlog.
MAX_CONNECTIONS = 64
#: Default pipes moved per second by ``DELETE /backends/{id}?migrate=true``.
DEFAULT_MIGRATE_RATE = 50.0
#: Longest a migration task keeps moving the pipes of one backend.
MIGRATE_TIMEOUT = 600.0
#: How often a migration re-checks a backend whose pipes are still dialing it.
MIGRATE_POLL = 0.05

#: Endpoints that need no token (load balancers and orchestrators probe them).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})


class AdminConfigError(ValueError):
    """The admin listener cannot start with these settings (e.g. no token off loopback)."""


class AdminTarget(Protocol):
    """What the admin server needs from a proxy.

    :class:`wspipe_anyio.ProxyServer` satisfies it through :func:`server_target`;
    tests may implement it over a bare :class:`wspipe_core.Proxy`. Every method is
    synchronous and called from the event loop the proxy runs on.
    """

    @property
    def proxy(self) -> Proxy:
        """The core, read at scrape time for metrics (stats, budget, connections)."""
        ...

    def backends(self) -> list[BackendInfo]:
        """Snapshots of the pool."""
        ...

    def pipes(self) -> list[PipeInfo]:
        """Snapshots of the live pipes."""
        ...

    def add_backend(self, url: str, *, weight: float = 1.0) -> BackendInfo:
        """Register a backend; raise ``InvalidBackendURL`` or ``BackendAlreadyRegistered``."""
        ...

    def remove_backend(self, id_or_url: str, *, migrate: bool = False) -> None:
        """Drain a backend (``migrate`` moves every pipe at once); raise ``UnknownBackend``."""
        ...

    def migrate_pipe(self, pipe_id: str) -> None:
        """Move one pipe off its backend now (its buffer is replayed on the next link)."""
        ...


class _ServerTarget:
    """:class:`AdminTarget` over a ``ProxyServer``: core calls whose actions it dispatches."""

    def __init__(self, server: Any) -> None:
        self._server = server

    @property
    def proxy(self) -> Proxy:
        return cast(Proxy, self._server.proxy)

    def _execute(self, actions: list[Any]) -> None:
        # Dispatch the core's actions and re-arm the timer loop (a call may move the
        # core's next deadline earlier, e.g. add_backend makes waiting pipes retry now).
        execute = getattr(self._server, "execute", None) or self._server._execute
        execute(actions)

    @property
    def shutting_down(self) -> bool:
        """The server stopped accepting clients (``/readyz`` answers 503)."""
        return bool(getattr(self._server, "stopping", getattr(self._server, "_stopping", False)))

    def backends(self) -> list[BackendInfo]:
        return self.proxy.backends()

    def pipes(self) -> list[PipeInfo]:
        return self.proxy.pipes()

    def add_backend(self, url: str, *, weight: float = 1.0) -> BackendInfo:
        info = self.proxy.add_backend(url, weight=weight, now=anyio.current_time())
        self._execute([])
        return info

    def remove_backend(self, id_or_url: str, *, migrate: bool = False) -> None:
        self._execute(self.proxy.remove_backend(id_or_url, migrate=migrate,
                                                now=anyio.current_time()))

    def migrate_pipe(self, pipe_id: str) -> None:
        self._execute(self.proxy.migrate_pipe(pipe_id, now=anyio.current_time()))


def server_target(server: Any) -> AdminTarget:
    """Adapt a :class:`wspipe_anyio.ProxyServer` (started) to :class:`AdminTarget`."""
    return _ServerTarget(server)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_token(token: str | None = None, token_file: str | None = None) -> str | None:
    """The admin token from a value or a file (first line, stripped); ``None`` if neither.

    :raises AdminConfigError: Both given, an unreadable file, or an empty token.
    """
    if token is not None and token_file is not None:
        raise AdminConfigError("give the admin token or a token file, not both")
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as file:
                token = file.readline().strip()
        except OSError as exc:
            raise AdminConfigError(
                f"cannot read admin token file {token_file}: {exc.strerror or exc}") from None
    if token is not None and not token.strip():
        raise AdminConfigError("the admin token is empty")
    return token.strip() if token is not None else None


# JSON views of the core's snapshots.


def backend_json(info: BackendInfo) -> dict[str, Any]:
    """``{id, url, state, pipes, errors, consecutive_failures, weight}``."""
    return {"id": info.id, "url": info.url, "state": info.state.value, "pipes": info.pipes,
            "errors": info.errors, "consecutive_failures": info.consecutive_failures,
            "weight": info.weight}


def pipe_json(info: PipeInfo, now: float, wall_offset: float) -> dict[str, Any]:
    """``{id, client_id, backend_id, state, buffered_bytes, interruptions, since, ...}``.

    ``since`` is wall-clock Unix time (the core's monotonic time plus
    ``wall_offset``); ``age_seconds`` is how long the pipe has lived. Request
    headers are never shown (they carry cookies and credentials).
    """
    age = max(0.0, now - info.since)
    return {"id": info.id, "client_id": info.client_id, "backend_id": info.backend_id,
            "state": info.state.value, "buffered_bytes": info.buffered_bytes,
            "interruptions": info.interruptions, "since": round(info.since + wall_offset, 3),
            "age_seconds": round(age, 3), "subprotocol": info.subprotocol,
            "peer": info.request.peer, "path": info.request.path}


# HTTP plumbing.


@dataclass
class _Request:
    method: str
    target: str
    path: str
    query: str
    headers: list[tuple[bytes, bytes]]
    peer: str
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class _Reply(Exception):
    """An HTTP answer, raised from anywhere in a handler."""

    def __init__(self, status: int, body: Any, *, content_type: str = "application/json",
                 headers: Iterable[tuple[str, str]] = (), log_reason: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = list(headers)
        #: Why, for the log line of an error answer.
        self.log_reason = log_reason


def _error(status: int, detail: str, **kwargs: Any) -> _Reply:
    return _Reply(status, {"detail": detail}, log_reason=detail, **kwargs)


_REASONS = {200: b"OK", 201: b"Created", 202: b"Accepted", 400: b"Bad Request",
            401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
            405: b"Method Not Allowed", 408: b"Request Timeout", 409: b"Conflict",
            413: b"Content Too Large", 431: b"Request Header Fields Too Large",
            500: b"Internal Server Error", 501: b"Not Implemented",
            503: b"Service Unavailable"}


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise _error(400, f"query parameter {name} must be true or false, got {value!r}")


class AdminServer:
    """The admin HTTP listener of one proxy.

    Use it as an async context manager (binds and serves in the background until the
    block ends) or start it in a task group with ``await tg.start(admin.run)``.

    :param target: The proxy to control (see :class:`AdminTarget`, :func:`server_target`).
    :param host: Listen address; loopback unless a token is set.
    :param port: Listen port (0 picks a free one; see :attr:`port`).
    :param token: Bearer token required on every endpoint but ``/healthz`` and
        ``/readyz``. ``None`` leaves them open, which is only allowed on loopback.
    :param migrate_rate: Pipes per second moved by ``DELETE ...?migrate=true``.
    :param metrics: A :class:`wspipe_anyio.metrics.Metrics`; built for ``target`` if
        omitted and ``prometheus_client`` is installed (else ``/metrics`` answers 501).
    :param clock: Monotonic clock of the core (default ``anyio.current_time``).
    :raises AdminConfigError: Non-loopback ``host`` without a token, or a bad rate.
    """

    def __init__(
        self,
        target: AdminTarget,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        migrate_rate: float = DEFAULT_MIGRATE_RATE,
        metrics: Metrics | None = None,
        max_body: int = MAX_BODY,
        request_timeout: float = REQUEST_TIMEOUT,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if token is not None and not token:
            raise AdminConfigError("the admin token is empty")
        if token is None and not is_loopback(host):
            raise AdminConfigError(
                f"refusing to serve the admin API on non-loopback address {host} without a "
                "token (set --admin-token or --admin-token-file)")
        if not (isinstance(migrate_rate, int | float) and 0 < migrate_rate < math.inf):
            raise AdminConfigError(f"migrate_rate must be > 0 pipes/s, got {migrate_rate!r}")
        self.target = target
        self.host = host
        self._port = port
        self._token = token.encode() if token is not None else None
        self.migrate_rate = float(migrate_rate)
        self._max_body = max_body
        self._request_timeout = request_timeout
        self._clock = clock or anyio.current_time
        if metrics is None:
            try:
                from .metrics import Metrics
            except ImportError:  # prometheus_client not installed: /metrics answers 501
                metrics = None
            else:
                metrics = Metrics(target)
        self.metrics = metrics
        self._listeners: list[SocketListener] = []
        self._tg: TaskGroup | None = None
        self._slots: anyio.Semaphore | None = None  # anyio objects need a running loop
        #: Wall-clock time minus the core's monotonic time (set at start).
        self._wall_offset = 0.0
        #: Backend id -> cancel scope of the task moving its pipes.
        self._migrations: dict[str, anyio.CancelScope] = {}
        #: Pipes moved by drain-and-migrate since start.
        self.pipes_migrated = 0

    # Lifecycle.

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port), after start."""
        assert self._listeners, "the admin server is not started"
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
        self._wall_offset = time.time() - self._clock()
        multi = await anyio.create_tcp_listener(local_host=self.host, local_port=self._port)
        self._listeners = list(cast(list[SocketListener], multi.listeners))
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        for listener in self._listeners:
            tg.start_soon(self._accept_loop, listener)
        log.info("admin API listening on %s (token %s)", self.url,
                 "required" if self._token is not None else "not set: loopback only")
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
            if self.metrics is not None:
                self.metrics.close()

    async def run(self, *, task_status: TaskStatus[AdminServer] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
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
                await anyio.sleep(0.1)
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
                        await self._send(conn, stream, _error(408, "request timed out"))
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
                await self._send(conn, stream, _error(status, detail), close=True)
            return False
        if not isinstance(event, h11.Request):
            return False  # ConnectionClosed or EOF between requests
        request = self._request(event, peer)
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

    @staticmethod
    def _request(event: h11.Request, peer: str) -> _Request:
        target = event.target.decode("latin-1")
        parts = urlsplit(target)
        return _Request(event.method.decode("ascii", "replace").upper(), target,
                        unquote(parts.path) or "/", parts.query, list(event.headers), peer)

    async def _read_body(self, conn: h11.Connection, stream: SocketStream,
                         request: _Request) -> None:
        length = request.header(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            raise _error(413, f"request body of {int(length)} bytes is over the "
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
                    raise _error(413, f"request body over the {self._max_body}-byte limit",
                                 headers=[("connection", "close")])
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                request.body = b"".join(chunks)
                return
            else:
                raise _error(400, "request body ended early")

    async def _send(self, conn: h11.Connection, stream: SocketStream, reply: _Reply,
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
                                      reason=_REASONS.get(reply.status, b"")))
        data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send(data)

    # Routing.

    async def _handle(self, conn: h11.Connection, stream: SocketStream,
                      request: _Request) -> _Reply:
        try:
            route, allowed = self._route(request.path)
            if request.path not in PUBLIC_PATHS:
                self._authorize(request)
            if route is None:
                raise _error(404, f"no such endpoint: {request.path}")
            if request.method not in allowed:
                raise _error(405, f"method {request.method} not allowed on {request.path}; "
                                  f"allowed: {', '.join(sorted(allowed))}",
                             headers=[("allow", ", ".join(sorted(allowed)))])
            if request.method == "POST":
                await self._read_body(conn, stream, request)
            elif conn.their_state is h11.SEND_BODY:
                # A body on GET/DELETE: read and ignore it (bounded like any body).
                await self._read_body(conn, stream, request)
            result = route(request)
        except _Reply as reply:
            return reply
        except Exception:
            log.exception("admin %s %s: internal error", request.method, request.path)
            return _error(500, "internal error (see the proxy's log)")
        return result

    def _route(self, path: str) -> tuple[Callable[[_Request], _Reply] | None, frozenset[str]]:
        get = frozenset({"GET"})
        if path == "/healthz":
            return self._healthz, get
        if path == "/readyz":
            return self._readyz, get
        if path == "/metrics":
            return self._metrics, get
        if path in ("/backends", "/backends/"):
            return self._backends, frozenset({"GET", "POST"})
        if path in ("/pipes", "/pipes/"):
            return self._pipes, get
        head, _, rest = path.lstrip("/").partition("/")
        if rest and "/" not in rest:
            if head == "backends":
                return self._backend, frozenset({"GET", "DELETE"})
            if head == "pipes":
                return self._pipe, get
        return None, frozenset()

    def _authorize(self, request: _Request) -> None:
        if self._token is None:
            return
        header = request.header(b"authorization")
        if header is None:
            raise _error(401, "missing token: send Authorization: Bearer <token>",
                         headers=[("www-authenticate", 'Bearer realm="wspipe-admin"')])
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            raise _error(401, "malformed Authorization header: expected Bearer <token>",
                         headers=[("www-authenticate", 'Bearer realm="wspipe-admin"')])
        if not hmac.compare_digest(given.strip(), self._token):
            raise _error(403, "invalid token")

    # Endpoints.

    def _healthz(self, request: _Request) -> _Reply:
        return _Reply(200, {"status": "ok"})

    def _readyz(self, request: _Request) -> _Reply:
        backends = self.target.backends()
        up = sum(1 for b in backends if b.state is BackendState.UP)
        body = {"ready": up > 0, "backends_up": up, "backends": len(backends)}
        if getattr(self.target, "shutting_down", False):
            return _Reply(503, {**body, "ready": False, "detail": "shutting down"},
                          log_reason="shutting down")
        if not up:
            return _Reply(503, {**body, "detail": "no backend is up"},
                          log_reason="no backend is up")
        return _Reply(200, body)

    def _metrics(self, request: _Request) -> _Reply:
        if self.metrics is None:
            raise _error(501, "metrics need the prometheus_client package")
        body, content_type = self.metrics.exposition(request.header(b"accept"))
        return _Reply(200, body, content_type=content_type)

    def _backends(self, request: _Request) -> _Reply:
        if request.method != "POST":
            return _Reply(200, [backend_json(b) for b in self.target.backends()])
        try:
            payload = json.loads(request.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise _error(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise _error(400, 'body must be a JSON object: {"url": "ws://...", "weight": 1}')
        unknown = sorted(set(payload) - {"url", "weight"})
        if unknown:
            raise _error(400, f"unknown field(s): {', '.join(unknown)}")
        url = payload.get("url")
        weight = payload.get("weight", 1.0)
        if not isinstance(url, str):
            raise _error(400, "field url (a ws:// or wss:// URL string) is required")
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise _error(400, "field weight must be a number > 0")
        try:
            info = self.target.add_backend(url, weight=float(weight))
        except InvalidBackendURL as exc:
            raise _error(400, str(exc)) from None
        except BackendAlreadyRegistered as exc:
            raise _error(409, str(exc)) from None
        log.info("admin: backend %s registered: %s (weight %g)", info.id, info.url, info.weight)
        return _Reply(201, backend_json(info), headers=[("location", f"/backends/{info.id}")])

    def _find_backend(self, backend_id: str) -> BackendInfo:
        for info in self.target.backends():
            if info.id == backend_id:
                return info
        raise _error(404, f"no backend {backend_id!r} in the pool")

    def _backend(self, request: _Request) -> _Reply:
        backend_id = request.path.rstrip("/").rsplit("/", 1)[1]
        info = self._find_backend(backend_id)
        if request.method != "DELETE":
            return _Reply(200, backend_json(info))
        migrate = False
        for name, value in parse_qsl(request.query, keep_blank_values=True):
            if name != "migrate":
                raise _error(400, f"unknown query parameter {name!r}")
            migrate = _parse_bool(name, value)
        try:
            self.target.remove_backend(backend_id, migrate=False)
        except UnknownBackend as exc:
            raise _error(404, str(exc)) from None
        log.info("admin: backend %s %s draining (%d pipes)%s", info.id, info.url, info.pipes,
                 f", migrating at {self.migrate_rate:g} pipes/s" if migrate else "")
        if migrate and info.pipes and backend_id not in self._migrations:
            self.start_migration(backend_id)
        body = {**backend_json(info), "state": BackendState.DRAINING.value, "migrate": migrate,
                "migrate_rate": self.migrate_rate if migrate else None,
                "removed": all(b.id != backend_id for b in self.target.backends())}
        return _Reply(202, body)

    def _pipes(self, request: _Request) -> _Reply:
        now = self._clock()
        return _Reply(200, [pipe_json(p, now, self._wall_offset) for p in self.target.pipes()])

    def _pipe(self, request: _Request) -> _Reply:
        pipe_id = request.path.rstrip("/").rsplit("/", 1)[1]
        for info in self.target.pipes():
            if info.id == pipe_id:
                return _Reply(200, pipe_json(info, self._clock(), self._wall_offset))
        raise _error(404, f"no pipe {pipe_id!r}")

    # Drain-and-migrate at a bounded rate.

    def start_migration(self, backend_id: str) -> None:
        """Move the pipes of (draining) ``backend_id`` to other backends, ``migrate_rate``/s."""
        assert self._tg is not None, "the admin server is not started"
        scope = anyio.CancelScope()
        self._migrations[backend_id] = scope
        self._tg.start_soon(self._migrate, backend_id, scope)

    @property
    def migrations(self) -> list[str]:
        """Ids of the backends whose pipes are being moved now."""
        return list(self._migrations)

    async def _migrate(self, backend_id: str, scope: anyio.CancelScope) -> None:
        interval = 1.0 / self.migrate_rate
        moved = 0
        waiting = False
        started = anyio.current_time()
        try:
            with scope, anyio.move_on_after(MIGRATE_TIMEOUT) as timeout:
                next_at = started
                # Bounded by MIGRATE_TIMEOUT; each round moves one pipe or waits MIGRATE_POLL.
                while True:
                    backends = self.target.backends()
                    backend = next((b for b in backends if b.id == backend_id), None)
                    if backend is None or backend.pipes == 0:
                        break  # drained: the pool removed it
                    if backend.state is not BackendState.DRAINING:
                        log.warning("admin: backend %s is no longer draining; migration "
                                    "stopped", backend_id)
                        break
                    if not any(b.state is BackendState.UP for b in backends):
                        # Never move a pipe to nowhere (it would buffer, then get 1013):
                        # it stays on the draining backend until another one is up.
                        if not waiting:
                            log.warning("admin: no other backend is up; the pipes of %s stay "
                                        "until one is", backend_id)
                            waiting = True
                        await anyio.sleep(MIGRATE_POLL)
                        continue
                    waiting = False
                    pipe = next((p for p in self.target.pipes()
                                 if p.backend_id == backend_id and p.state is PipeState.LINKED),
                                None)
                    if pipe is None:
                        # Its pipes are still dialing it (a link opened before the drain):
                        # once linked they are moved too.
                        await anyio.sleep(MIGRATE_POLL)
                        continue
                    delay = next_at - anyio.current_time()
                    if delay > 0:
                        await anyio.sleep(delay)
                        continue  # the pipe may have changed meanwhile: look again
                    self.target.migrate_pipe(pipe.id)
                    moved += 1
                    self.pipes_migrated += 1
                    # Never faster than migrate_rate, even after a late round: no bursts.
                    next_at = anyio.current_time() + interval
            if timeout.cancelled_caught:
                log.warning("admin: migration off backend %s gave up after %.0fs (%d pipes "
                            "moved)", backend_id, MIGRATE_TIMEOUT, moved)
            else:
                log.info("admin: %d pipe(s) migrated off backend %s in %.2fs", moved,
                         backend_id, anyio.current_time() - started)
        finally:
            if self._migrations.get(backend_id) is scope:
                del self._migrations[backend_id]


# Wiring into ``wspipe serve``: flags, config-file keys, validation, lifetime.

#: Config-file keys (and ``serve`` flags) of the admin listener; driver keys, not core ones.
ADMIN_KEYS = frozenset({"admin", "admin_token", "admin_token_file", "migrate_rate"})
#: Their defaults: no admin listener.
ADMIN_DEFAULTS: dict[str, Any] = {"admin": None, "admin_token": None, "admin_token_file": None,
                                  "migrate_rate": DEFAULT_MIGRATE_RATE}
#: Environment variable holding the admin token (keeps it out of ``ps`` and config files).
TOKEN_ENV = "WSPIPE_ADMIN_TOKEN"


@dataclass(frozen=True)
class AdminOptions:
    """A validated admin listener configuration."""

    host: str
    port: int
    token: str | None
    migrate_rate: float

    def __repr__(self) -> str:  # never show the token
        return (f"AdminOptions(host={self.host!r}, port={self.port}, "
                f"token={'***' if self.token else None}, migrate_rate={self.migrate_rate})")


def add_admin_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--admin``, ``--admin-token``, ``--admin-token-file``, ``--migrate-rate``."""
    add = parser.add_argument
    add("--admin", metavar="HOST:PORT",
        help="serve the admin API (pool, pipes, drain, /metrics, /healthz, /readyz) here; "
             "off unless given")
    add("--admin-token", metavar="TOKEN",
        help=f"bearer token of the admin API (default ${TOKEN_ENV}); required unless "
             "--admin is a loopback address")
    add("--admin-token-file", metavar="FILE", help="read the admin token from this file")
    add("--migrate-rate", type=float, metavar="PIPES_PER_S",
        help=f"pipes moved per second by a drain with migrate "
             f"({DEFAULT_MIGRATE_RATE:g})")


def admin_options(settings: Mapping[str, Any],
                  environ: Mapping[str, str] | None = None) -> AdminOptions | None:
    """Validate the admin keys of merged settings; ``None`` when ``admin`` is not set.

    The token comes from ``admin_token``, else ``admin_token_file``, else
    ``$WSPIPE_ADMIN_TOKEN``.

    :raises AdminConfigError: Bad address, token or rate; no token off loopback.
    """
    environ = os.environ if environ is None else environ
    address = settings.get("admin")
    if address is None or address == "":
        return None
    try:
        host, port = parse_address(str(address), default_port=9090)
    except ValueError as exc:
        raise AdminConfigError(f"admin: {exc}") from None
    token = load_token(settings.get("admin_token"), settings.get("admin_token_file"))
    if token is None and environ.get(TOKEN_ENV):
        token = load_token(environ[TOKEN_ENV])
    if token is None and not is_loopback(host):
        raise AdminConfigError(
            f"refusing to serve the admin API on non-loopback address {host} without a token "
            f"(set --admin-token-file, ${TOKEN_ENV} or --admin-token)")
    rate = settings.get("migrate_rate")
    rate = DEFAULT_MIGRATE_RATE if rate is None else rate
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
        raise AdminConfigError(f"migrate_rate must be > 0 pipes per second, got {rate!r}")
    return AdminOptions(host, port, token, float(rate))


@contextlib.asynccontextmanager
async def open_admin(server: Any, options: AdminOptions | None
                     ) -> AsyncIterator[AdminServer | None]:
    """Serve the admin API of a started ``ProxyServer`` for the duration of the block.

    Yields ``None`` (and does nothing) when ``options`` is ``None``.
    """
    if options is None:
        yield None
        return
    admin = AdminServer(server_target(server), host=options.host, port=options.port,
                        token=options.token, migrate_rate=options.migrate_rate)
    async with admin:
        yield admin
