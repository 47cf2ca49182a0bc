"""The proxy: the one entry point of the core.

``Proxy.handle(event, now)`` takes an input event and returns the actions the
driver must execute; ``next_deadline()`` says when the core next needs to be
woken and ``handle_timer(now)`` wakes it. Pool operations (``add_backend``,
``remove_backend``) and ``shutdown`` are methods too. After calling any of them
the driver re-reads ``next_deadline()``. Every proxy decision is made here.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import pluggy
from wsproto import WSConnection
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
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from . import events as ev
from .actions import (
    Action,
    CloseClient,
    CloseLink,
    OpenLink,
    PauseClient,
    PauseLink,
    ResumeClient,
    ResumeLink,
    SendToClient,
    SendToLink,
)
from .assembler import Message, payload_size
from .buffer import MemoryBudget
from .client import PendingClient, choose_subprotocol, http_error, request_info
from .codes import InterruptionCause, LinkFailure
from .config import ProxyConfig
from .deadlines import Deadlines
from .errors import UsageError
from .hooks import Hooks, make_plugin_manager
from .info import (
    BackendInfo,
    BackendRequest,
    BackendState,
    BufferFullAction,
    MigrationInfo,
    PipeEvent,
    PipeEventKind,
    PipeInfo,
    PipeState,
)
from .link import Link, LinkState
from .migration import Migrations, Move
from .pipe import Pipe
from .pool import Backend, Pool
from .stats import Stats

log = logging.getLogger("wspipe")

_UNSENDABLE_CODES = frozenset({1005, 1006, 1015})
_OPENISH = (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)


_MESSAGE_EVENTS = (TextMessage, BytesMessage)


def _frame(message: Message) -> TextMessage | BytesMessage:
    return TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)


class Proxy:
    """The sans-IO proxy: clients, pipes, links and the pool, driven by events and time.

    :param config: Limits, timeouts and policies (defaults if omitted).
    :param pm: A plugin manager from :func:`make_plugin_manager`; built from
        ``config`` if omitted.
    :param rng: The random source handed to strategies and backoff (tests pass a
        seeded ``random.Random``).
    """

    def __init__(
        self,
        config: ProxyConfig | None = None,
        *,
        pm: pluggy.PluginManager | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config = config or ProxyConfig()
        self.pm = pm if pm is not None else make_plugin_manager(config)
        self.hooks = Hooks(self.pm, config)
        self.hooks.configure()
        self.rng = rng if rng is not None else random.Random()
        self.pool = Pool(config)
        self.budget = MemoryBudget(config.memory_budget)
        self.stats = Stats()
        self._pending: dict[ev.ConnId, PendingClient] = {}
        self._pipes: dict[ev.ConnId, Pipe] = {}
        self._by_client_id: dict[str, Pipe] = {}
        self._by_pipe_id: dict[str, Pipe] = {}
        self._links: dict[ev.LinkId, Link] = {}
        self._deadlines = Deadlines()
        self._dirty: set[PendingClient | Pipe | Link] = set()
        #: Pipes paused by the ``pause`` policy because the memory budget was full,
        #: retried whenever bytes are given back to the budget.
        self._budget_waiters: dict[Pipe, None] = {}
        self._budget_freed = False
        self.migrations = Migrations(config.migrate_rate)
        self._next_link = 1
        self._next_pipe = 1
        self._shutting_down = False
        self._handlers: dict[type, Callable[[Any, float, list[Action]], None]] = {
            ev.ClientConnected: self._on_client_connected,
            ev.ClientDataReceived: self._on_client_data,
            ev.ClientEOF: self._on_client_eof,
            ev.ClientDataSent: self._on_client_sent,
            ev.LinkConnected: self._on_link_connected,
            ev.LinkConnectFailed: self._on_link_connect_failed,
            ev.LinkDataReceived: self._on_link_data,
            ev.LinkEOF: self._on_link_eof,
            ev.LinkDataSent: self._on_link_sent,
        }
        for url in config.backends:
            self.pool.add(url)

    # ------------------------------------------------------------------ public API

    def handle(self, event: ev.Event, now: float) -> list[Action]:
        """Feed one event observed at monotonic time ``now``; return the actions to run."""
        handler = self._handlers.get(type(event))
        if handler is None:
            raise UsageError(f"not an input event: {event!r}")
        out: list[Action] = []
        handler(event, now, out)
        self._wake_budget_waiters(now, out)
        self._reschedule()
        return out

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must next be called, or ``None`` if nothing is pending."""
        return self._deadlines.next()

    def handle_timer(self, now: float) -> list[Action]:
        """Fire every deadline ``<= now``; return the actions to run."""
        out: list[Action] = []
        for key in self._deadlines.pop_due(now):
            kind: str
            ident: int
            kind, ident = key  # type: ignore[misc]
            if kind == "c":
                client = self._pending.get(ident)
                if client is not None:
                    self._handshake_timeout(client, out)
            elif kind == "p":
                pipe = self._pipes.get(ident)
                if pipe is not None:
                    self._dirty.add(pipe)
                    self._pipe_timer(pipe, now, out)
            elif kind == "b":
                self.pool.refresh(now)
            elif kind == "m":
                self._migration_timer(now, out)
            else:
                link = self._links.get(ident)
                if link is not None:
                    self._dirty.add(link)
                    self._link_timer(link, now, out)
        self._wake_budget_waiters(now, out)
        self._reschedule()
        return out

    def add_backend(self, url: str, *, weight: float = 1.0, now: float) -> BackendInfo:
        """Register a backend (``AddConnectionToPool``); pipes waiting for one retry now.

        :raises InvalidBackendURL: not a ``ws://``/``wss://`` URL, or a bad weight.
        :raises BackendAlreadyRegistered: the URL is in the pool already.
        """
        backend = self.pool.add(url, weight)
        for pipe in self._pipes.values():
            if pipe.retry_at is not None and pipe.retry_at > now:
                pipe.retry_at = now
                self._dirty.add(pipe)
        self._reschedule()
        return backend.info()

    def remove_backend(self, id_or_url: str, *, migrate: bool, now: float) -> list[Action]:
        """Drain a backend: no new pipes; with ``migrate`` its pipes move to others.

        Migration is paced at ``migrate_rate`` pipes a second over the whole proxy,
        on the core's clock (see :mod:`wspipe_core.migration`); a pipe moves only
        while another backend is up. Each migrated pipe's link is closed with 1001;
        the pipe buffers, fails over and replays, so nothing is lost. The backend
        leaves the pool once empty.

        :raises UnknownBackend: no backend with that id or URL.
        """
        backend = self.pool.get(id_or_url)
        self.pool.drain(backend)
        out: list[Action] = []
        if migrate and backend.registered:
            ids = [p.id for p in self._pipes.values()
                   if p.link is not None and p.link.backend is backend]
            self.migrations.start(backend.id, ids, now)
            self._migration_timer(now, out)
        self._reschedule()
        return out

    def migrations_under_way(self) -> list[MigrationInfo]:
        """The drains with migrate under way, one per backend."""
        return self.migrations.snapshot()

    def _migration_timer(self, now: float, out: list[Action]) -> None:
        while (turn := self.migrations.due(now)) is not None:
            backend_id, pipe_id = turn
            pipe = self._by_pipe_id.get(pipe_id)
            link = pipe.link if pipe is not None else None
            if (pipe is None or link is None or link.backend.id != backend_id
                    or pipe.state is PipeState.CLOSING):
                self.migrations.done(backend_id, Move.GONE, now)
            elif not any(b.state is BackendState.UP and b is not link.backend
                         for b in self.pool):
                # Never move a pipe to nowhere (it would buffer, then get 1013): it
                # stays on the draining backend until another one is up.
                self.migrations.done(backend_id, Move.WAIT, now)
            else:
                self.migrate_pipe(pipe_id, now=now, _out=out)
                self.stats.pipes_migrated += 1
                self.migrations.done(backend_id, Move.MOVED, now)

    def migrate_pipe(
        self, pipe_id: str, *, now: float, _out: list[Action] | None = None
    ) -> list[Action]:
        """Move one pipe to another backend now (close its link with 1001, fail over)."""
        out: list[Action] = [] if _out is None else _out
        pipe = self._by_pipe_id.get(pipe_id)
        if pipe is None or pipe.link is None or pipe.state is PipeState.CLOSING:
            return out
        link = pipe.link
        backend = link.backend
        self._detach_link(pipe)
        self._close_link(link, 1001, "backend draining, session moves", now, out)
        if pipe.state is PipeState.LINKED:
            self._interrupt(pipe, backend, InterruptionCause.MIGRATE,
                            f"migrating off draining backend {backend.id}", now, out)
        else:  # still dialing that backend: choose another one instead
            pipe.exclude = backend
            self._dial(pipe, now, out)
        if _out is None:
            self._reschedule()
        return out

    def shutdown(self, now: float) -> list[Action]:
        """Stop accepting; close every client with 1001 and every link."""
        self._shutting_down = True
        out: list[Action] = []
        for client in list(self._pending.values()):
            self._forget_pending(client, out)
        for pipe in list(self._pipes.values()):
            self._end_pipe(pipe, 1001, "proxy shutting down", now, out)
        self._reschedule()
        return out

    @property
    def idle(self) -> bool:
        """No client connection and no link is left (shutdown is complete)."""
        return not (self._pending or self._pipes or self._links)

    @property
    def connections(self) -> int:
        """Client connections, handshaking or open."""
        return len(self._pending) + len(self._pipes)

    def backends(self) -> list[BackendInfo]:
        """Snapshots of the pool, in registration order."""
        return [b.info() for b in self.pool]

    def pipes(self) -> list[PipeInfo]:
        """Snapshots of every pipe."""
        return [p.info() for p in self._pipes.values()]

    def pipe_of(self, conn: ev.ConnId) -> PipeInfo | None:
        """The snapshot of the pipe of client connection ``conn``, if it has one."""
        pipe = self._pipes.get(conn)
        return pipe.info() if pipe is not None else None

    # ------------------------------------------------------------- client events

    def _on_client_connected(self, event: ev.ClientConnected, now: float,
                             out: list[Action]) -> None:
        conn = event.conn
        if conn in self._pending or conn in self._pipes:
            raise UsageError(f"client connection {conn} is already known")
        if self._shutting_down or self.connections >= 2 * self.config.max_connections:
            status, why = (503, "proxy is shutting down") if self._shutting_down else (
                503, "too many connections")
            log.warning("client conn %s from %s refused with %d: %s", conn, event.peer, status, why)
            self.stats.clients_rejected[status] += 1
            out.append(SendToClient(conn, http_error(status, why)))
            out.append(CloseClient(conn))
            return
        client = PendingClient(conn, event.peer, event.tls, now + self.config.handshake_timeout)
        self._pending[conn] = client
        self._dirty.add(client)

    def _on_client_data(self, event: ev.ClientDataReceived, now: float,
                        out: list[Action]) -> None:
        pipe = self._pipes.get(event.conn)
        if pipe is not None:
            if pipe.ws.state is ConnectionState.CLOSED:
                return
            self._dirty.add(pipe)
            pipe.ws.receive_data(event.data)
            self._pump_client(pipe, now, out)
            return
        client = self._pending.get(event.conn)
        if client is not None:
            self._handshake(client, event.data, now, out)

    def _on_client_eof(self, event: ev.ClientEOF, now: float, out: list[Action]) -> None:
        client = self._pending.pop(event.conn, None)
        if client is not None:
            log.info("client conn %s from %s went away during the handshake", client.conn,
                     client.peer)
            self._deadlines.set(("c", client.conn), None)
            out.append(CloseClient(client.conn))
            return
        pipe = self._pipes.get(event.conn)
        if pipe is None:
            return
        if pipe.state is not PipeState.CLOSING:
            self._plog(logging.INFO, pipe, "client went away without a close frame")
            self._release_pipe(pipe, 1006, "client went away", now, out,
                               link_code=1001, link_reason="client went away")
        self._forget_pipe(pipe, out)

    def _on_client_sent(self, event: ev.ClientDataSent, now: float, out: list[Action]) -> None:
        pipe = self._pipes.get(event.conn)
        if pipe is None:
            return
        pipe.pending -= event.nbytes
        link = pipe.link
        if link is not None and link.paused and pipe.pending <= self.config.write_low_water:
            link.paused = False
            out.append(ResumeLink(link.id))

    # ------------------------------------------------------------- handshake

    def _handshake(self, client: PendingClient, data: bytes, now: float,
                   out: list[Action]) -> None:
        client.received += len(data)
        limit = self.config.max_header_size
        if len(client.start) < limit + 4:
            client.start += data[:limit + 4 - len(client.start)]
        try:
            client.ws.receive_data(data)
            for event in client.ws.events():
                if isinstance(event, Request):
                    # h11 bounds only an *incomplete* head: a complete one that came
                    # in a single read is parsed whatever its size, so measure it (and
                    # only it: frames sent too early do not count).
                    end = client.start.find(b"\r\n\r\n")
                    if end < 0 or end + 4 > limit:
                        self._reject(client, 431, "request headers too large", out)
                        return
                    client.start = bytearray()
                    self._on_request(client, event, now, out)
                    return
        except RemoteProtocolError as exc:
            if client.received > limit:
                self._reject(client, 431, "request headers too large", out)
                return
            hint = exc.event_hint
            status = hint.status_code if isinstance(hint, RejectConnection) else 400
            self._reject(client, status, f"malformed upgrade request: {exc}", out)
            return
        if client.received > limit:
            self._reject(client, 431, "request headers too large", out)

    def _reject(self, client: PendingClient, status: int, reason: str, out: list[Action]) -> None:
        log.warning("client conn %s from %s refused with %d: %s", client.conn, client.peer,
                    status, reason)
        self.stats.clients_rejected[status] += 1
        out.append(SendToClient(client.conn, http_error(status, reason)))
        self._forget_pending(client, out)

    def _forget_pending(self, client: PendingClient, out: list[Action]) -> None:
        del self._pending[client.conn]
        self._dirty.discard(client)
        self._deadlines.set(("c", client.conn), None)
        out.append(CloseClient(client.conn))

    def _handshake_timeout(self, client: PendingClient, out: list[Action]) -> None:
        self._reject(client, 408, "upgrade request not completed within handshake_timeout", out)

    def _on_request(self, client: PendingClient, request: Request, now: float,
                    out: list[Action]) -> None:
        cfg = self.config
        info = request_info(request, client.peer, client.tls)
        if self._shutting_down:
            return self._reject(client, 503, "proxy is shutting down", out)
        if len(self._pipes) >= cfg.max_connections:
            return self._reject(client, 503, f"over max_connections ({cfg.max_connections})", out)
        client_id = self.hooks.client_id(info)
        if client_id is None:
            return self._reject(client, 400, f"bad client id: path {info.path!r} must be /<uuid>",
                                out)
        if client_id in self._by_client_id:
            return self._reject(client, 409, f"client id {client_id} is already connected", out)
        refusal = self.hooks.authenticate(info, client_id)
        if refusal is not None:
            return self._reject(client, refusal.status, refusal.reason, out)
        subprotocol = choose_subprotocol(info.subprotocols, cfg.subprotocols)
        accept = client.ws.send(AcceptConnection(subprotocol=subprotocol))
        del self._pending[client.conn]
        self._dirty.discard(client)
        self._deadlines.set(("c", client.conn), None)
        connection = client.ws.connection
        assert connection is not None  # wsproto opens it when it sends AcceptConnection
        pipe = Pipe(f"p{self._next_pipe}", client.conn, client_id, info, subprotocol,
                    connection, since=now, interrupted_at=now)
        self._next_pipe += 1
        pipe.buffer.overhead = cfg.buffer_message_overhead
        self._pipes[client.conn] = pipe
        self._by_client_id[client_id] = pipe
        self._by_pipe_id[pipe.id] = pipe
        self._dirty.add(pipe)
        if cfg.ping_interval:
            pipe.ping_at = now + cfg.ping_interval
        self.stats.clients_accepted += 1
        self._send_client(pipe, accept, out)
        self._plog(logging.INFO, pipe, "client accepted from %s (subprotocol %s)", client.peer,
                   subprotocol)
        self._event(PipeEventKind.OPENED, pipe, None, now)
        self._dial(pipe, now, out)
        self._pump_client(pipe, now, out)

    # ------------------------------------------------------------- client frames

    def _pump_client(self, pipe: Pipe, now: float, out: list[Action]) -> None:
        if pipe.buffer_paused:
            return  # the pause policy holds: frames stay undecoded in wsproto's buffer
        ws = pipe.ws
        for event in ws.events():
            if isinstance(event, _MESSAGE_EVENTS):
                if not self._client_message(pipe, event, now, out):
                    return
            elif isinstance(event, Ping):
                # A client that pings but does not read gets no more pongs once its
                # outbox is over the high-water mark (RFC 6455 5.5.3 allows answering
                # only the latest ping), so a ping flood cannot grow the outbox.
                if (ws.state is ConnectionState.OPEN
                        and pipe.pending <= self.config.write_high_water):
                    self._send_client(pipe, ws.send(event.response()), out)
            elif isinstance(event, Pong):
                pipe.pong_deadline = None
            elif isinstance(event, CloseConnection):
                self._client_close(pipe, event, now, out)
                return

    def _client_message(self, pipe: Pipe, event: TextMessage | BytesMessage, now: float,
                        out: list[Action]) -> bool:
        """Relay or buffer one client message fragment; ``False`` stops reading frames."""
        link = pipe.link
        data = event.data
        n = len(data) if type(data) is not str else payload_size(data)
        if (event.message_finished and link is not None and link.state is LinkState.OPEN
                and pipe.assembler.idle and n <= self.config.max_message_size
                and pipe.state is PipeState.LINKED):
            # Fast path: a whole one-frame message on a live link; nothing is held.
            self.stats.messages_in += 1
            self.stats.bytes_in += n
            self._send_link(link, link.ws.send(event), out)
            return True
        if pipe.state is PipeState.CLOSING:
            return True
        cfg = self.config
        if pipe.assembler.size + n > cfg.max_message_size:
            self._plog(logging.WARNING, pipe, "client message over max_message_size (%d)",
                       cfg.max_message_size)
            self._end_pipe(pipe, 1009, "message too big", now, out)
            return False
        live = link if link is not None and link.state is LinkState.OPEN else None
        if not event.message_finished:
            growth = n  # held in the assembler until the message is complete
        else:
            growth = 0 if live is not None else n + pipe.buffer.overhead
        if growth and not self._make_room(pipe, event, n, growth, now, out):
            return False
        prior = pipe.assembler.size
        message = pipe.assembler.feed(event, n)
        if message is not None:
            size = prior + n
            self.stats.messages_in += 1
            self.stats.bytes_in += size
            if live is not None:
                self._send_link(live, live.ws.send(_frame(message)), out)
            else:
                pipe.buffer.append(message, size)
        self._update_held(pipe)
        return True

    def _make_room(self, pipe: Pipe, event: TextMessage | BytesMessage, n: int, growth: int,
                   now: float, out: list[Action]) -> bool:
        """Apply the buffer policy if ``growth`` more bytes do not fit; ``True`` if they do."""
        cfg = self.config
        while True:
            if pipe.held + growth > cfg.buffer_limit:
                reason, limit = "buffer_limit", cfg.buffer_limit
            elif not self.budget.fits(growth):
                reason, limit = "memory_budget", self.budget.limit
            else:
                return True
            action = self.hooks.buffer_full(pipe.info(), n, limit, reason)
            if action is BufferFullAction.DROP_OLDEST and len(pipe.buffer):
                pipe.buffer.drop_oldest()
                pipe.dropped_messages += 1
                self.stats.messages_dropped += 1
                self._update_held(pipe)
                continue
            if action is BufferFullAction.PAUSE:
                pipe.overflow = event
                pipe.buffer_paused = True
                if pipe.paused_since is None:
                    pipe.paused_since = now
                    self._dirty.add(pipe)
                if reason == "memory_budget":
                    self._budget_waiters[pipe] = None
                self._plog(logging.INFO, pipe, "%s reached (%d bytes); not reading the client",
                           reason, limit)
                self._sync_client_pause(pipe, out)
                return False
            self._plog(logging.WARNING, pipe, "%s reached (%d bytes); closing the client",
                       reason, limit)
            self._end_pipe(pipe, 1013, "buffer limit reached", now, out)
            return False

    def _wake_budget_waiters(self, now: float, out: list[Action]) -> None:
        """Bytes went back to the memory budget: pipes paused on it try again.

        Their link may be live, so no flush would ever wake them. One that still
        does not fit pauses (and waits) again.
        """
        freed, self._budget_freed = self._budget_freed, False
        if not freed or not self._budget_waiters:
            return
        waiters, self._budget_waiters = list(self._budget_waiters), {}
        for pipe in waiters:
            if pipe.buffer_paused and pipe.state is not PipeState.CLOSING:
                self._dirty.add(pipe)
                self._resume_after_pause(pipe, now, out)

    def _update_held(self, pipe: Pipe) -> None:
        held = pipe.assembler.size + pipe.buffer.cost
        if held != pipe.held:
            delta = held - pipe.held
            pipe.held = held
            if delta > 0:
                self.budget.take(delta)
            else:
                self.budget.give_back(-delta)
                self._budget_freed = True

    def _client_close(self, pipe: Pipe, event: CloseConnection, now: float,
                      out: list[Action]) -> None:
        if pipe.ws.state is ConnectionState.OPEN:
            # wsproto reports a protocol violation as a CloseConnection it did not receive.
            self._plog(logging.WARNING, pipe, "protocol error from client (%d): %s", event.code,
                       event.reason)
            self._end_pipe(pipe, event.code, event.reason or "", now, out)
            return
        if pipe.state is PipeState.CLOSING:
            self._forget_pipe(pipe, out)
            return
        self._send_client(pipe, pipe.ws.send(event.response()), out)
        code = 1000 if event.code in _UNSENDABLE_CODES else event.code
        self._plog(logging.INFO, pipe, "client closed with %d %s", event.code, event.reason)
        self._release_pipe(pipe, event.code, event.reason or "client closed", now, out,
                           link_code=code, link_reason=event.reason or "")
        self._forget_pipe(pipe, out)

    # ------------------------------------------------------------- pipe lifecycle

    def _end_pipe(self, pipe: Pipe, code: int, reason: str, now: float,
                  out: list[Action]) -> None:
        """End the session: send the client a Close and release the pipe's resources."""
        if pipe.state is PipeState.CLOSING:
            return
        if code in _UNSENDABLE_CODES:
            code = 1000
        if pipe.ws.state in _OPENISH:
            self._send_client(pipe, pipe.ws.send(CloseConnection(code=code, reason=reason)), out)
        self._plog(logging.INFO, pipe, "closing the client with %d %s", code, reason)
        self._release_pipe(pipe, code, reason, now, out)
        if pipe.ws.state is ConnectionState.CLOSED:
            self._forget_pipe(pipe, out)
        else:
            pipe.state = PipeState.CLOSING
            pipe.close_deadline = now + self.config.close_timeout
            self._dirty.add(pipe)

    def _release_pipe(self, pipe: Pipe, code: int, reason: str, now: float, out: list[Action],
                      link_code: int = 1001, link_reason: str = "client session ended") -> None:
        """Free what the session held: its link, buffer, budget and client id."""
        link = pipe.link
        if link is not None:
            self._detach_link(pipe)
            self._close_link(link, link_code, link_reason, now, out)
        pipe.buffer.drain()
        pipe.assembler.reset()
        pipe.overflow = None
        self._budget_waiters.pop(pipe, None)
        self._update_held(pipe)
        pipe.retry_at = pipe.interrupted_at = pipe.ping_at = pipe.pong_deadline = None
        if self._by_client_id.get(pipe.client_id) is pipe:
            del self._by_client_id[pipe.client_id]
        self.stats.clients_closed[code] += 1
        pipe.state = PipeState.CLOSING
        self._event(PipeEventKind.CLOSED, pipe, None, now, reason, code=code)

    def _forget_pipe(self, pipe: Pipe, out: list[Action]) -> None:
        pipe.state = PipeState.CLOSED
        self._pipes.pop(pipe.conn, None)
        self._by_pipe_id.pop(pipe.id, None)
        self._dirty.discard(pipe)
        self._deadlines.set(("p", pipe.conn), None)
        out.append(CloseClient(pipe.conn))

    def _pipe_timer(self, pipe: Pipe, now: float, out: list[Action]) -> None:
        cfg = self.config
        if pipe.state is PipeState.CLOSING:
            if pipe.close_deadline is not None and now >= pipe.close_deadline:
                self._plog(logging.INFO, pipe, "client did not answer our Close in time")
                self._forget_pipe(pipe, out)
            return
        if pipe.client_paused and pipe.pong_deadline is not None:
            # Not reading the client (backpressure or the pause policy), so its pong
            # could not be seen: keepalive waits until reading resumes.
            pipe.pong_deadline = None
            if pipe.ping_at is not None:
                pipe.ping_at = now + cfg.ping_interval
        if pipe.pong_deadline is not None and now >= pipe.pong_deadline:
            self._plog(logging.WARNING, pipe, "client did not answer a ping within ping_timeout")
            self._end_pipe(pipe, 1011, "keepalive ping timeout", now, out)
            if pipe.conn in self._pipes:
                self._forget_pipe(pipe, out)  # a client that does not pong will not answer Close
            return
        if pipe.paused_since is not None and now >= pipe.paused_since + cfg.max_interruption:
            self._plog(logging.WARNING, pipe, "paused by the buffer policy for max_interruption "
                       "(%.1fs); closing the client", cfg.max_interruption)
            self._end_pipe(pipe, 1013, "buffer limit reached", now, out)
            return
        if pipe.interrupted_at is not None and now >= pipe.interrupted_at + cfg.max_interruption:
            self._plog(logging.WARNING, pipe, "no backend within max_interruption (%.1fs)",
                       cfg.max_interruption)
            self._end_pipe(pipe, 1013, "no backend available", now, out)
            return
        if pipe.ping_at is not None and now >= pipe.ping_at:
            pipe.ping_at = now + cfg.ping_interval
            if pipe.pong_deadline is None and pipe.ws.state is ConnectionState.OPEN:
                self._send_client(pipe, pipe.ws.send(Ping(payload=b"wspipe")), out)
                pipe.pong_deadline = now + cfg.ping_timeout
        if pipe.retry_at is not None and now >= pipe.retry_at:
            self._dial(pipe, now, out)

    def _interrupt(self, pipe: Pipe, backend: Backend, cause: InterruptionCause, why: str,
                   now: float, out: list[Action]) -> None:
        """The pipe lost its live link: buffer from now on and fail over at once."""
        pipe.state = PipeState.INTERRUPTED
        pipe.cause = cause
        pipe.interruptions += 1
        pipe.interrupted_at = now
        pipe.exclude = backend
        pipe.attempts = 0
        # Backpressure from the lost link's outbox ended with it (_detach_link): read
        # the client again, into the buffer, unless the pause policy holds it.
        self._sync_client_pause(pipe, out)
        self.stats.interruptions[cause] += 1
        self._plog(logging.WARNING, pipe, "interrupted: %s", why)
        self._event(PipeEventKind.INTERRUPTED, pipe, backend, now, why)
        self._dial(pipe, now, out)

    # ------------------------------------------------------------- links

    def _dial(self, pipe: Pipe, now: float, out: list[Action]) -> None:
        """Choose a backend and open a link to it, or schedule a retry after backoff."""
        self._dirty.add(pipe)
        pipe.retry_at = None
        candidates = self.pool.candidates(now, pipe.exclude)
        if not candidates and pipe.exclude is not None:
            # The backend that just failed is the only one: try it again rather than
            # waiting a backoff for nothing (the failure already cost one when it dialed).
            candidates = self.pool.candidates(now, None)
        pipe.exclude = None
        chosen = None
        if candidates:
            info = self.hooks.select_backend(pipe.info(), [b.info() for b in candidates],
                                             self.rng)
            if info is not None:
                chosen = next(b for b in candidates if b.id == info.id)
        if chosen is None:
            pipe.attempts += 1
            delay = self.hooks.backoff(pipe.info(), pipe.attempts, self.rng)
            pipe.retry_at = now + delay
            self._plog(logging.INFO, pipe, "no backend available; retry in %.3fs", delay)
            return
        link = Link(self._next_link, chosen, pipe, now + self.config.handshake_timeout)
        self._next_link += 1
        self._links[link.id] = link
        self._dirty.add(link)
        pipe.link = link
        chosen.pipes += 1
        self._plog(logging.DEBUG, pipe, "dialing %s as link %d", chosen.url, link.id)
        address = chosen.address
        out.append(OpenLink(link.id, address.host, address.port, address.tls, chosen.url))

    def _detach_link(self, pipe: Pipe) -> None:
        """The pipe's link stops being its link; the backend slot is freed."""
        link = pipe.link
        assert link is not None
        pipe.link = None
        pipe.last_backend = link.backend
        link.backend.pipes -= 1
        self.pool.remove_if_drained(link.backend)
        if pipe.backpressured:
            pipe.backpressured = False

    def _close_link(self, link: Link, code: int, reason: str, now: float,
                    out: list[Action]) -> None:
        """Send a Close if the link is open and wait for the answer; else just drop it."""
        if link.state is LinkState.OPEN and link.ws.state in _OPENISH:
            self._send_link(link, link.ws.send(CloseConnection(code=code, reason=reason)), out)
            if link.ws.state is ConnectionState.LOCAL_CLOSING:
                link.state = LinkState.CLOSING
                link.deadline = now + self.config.close_timeout
                self._dirty.add(link)
                if link.paused:
                    # What the backend wrote before our Close (and its Close reply) must
                    # still be read: a link paused for a slow client would keep it unread
                    # until close_timeout and lose it. Bounded by close_timeout.
                    link.paused = False
                    out.append(ResumeLink(link.id))
                return
        self._forget_link(link, out)

    def _forget_link(self, link: Link, out: list[Action]) -> None:
        if self._links.pop(link.id, None) is not None:
            out.append(CloseLink(link.id))
        self._dirty.discard(link)
        self._deadlines.set(("l", link.id), None)
        if link.pipe is not None and link.pipe.link is link:
            self._detach_link(link.pipe)
        link.assembler.reset()

    def _link_failed(self, link: Link, cause: LinkFailure, why: str, now: float,
                     out: list[Action]) -> None:
        """A link that never opened failed: count the error, back off, try again."""
        backend = link.backend
        pipe = link.pipe if link.pipe is not None and link.pipe.link is link else None
        self._forget_link(link, out)
        self.stats.link_failures[cause] += 1
        self.pool.record_failure(backend, now, why)
        if pipe is None:
            return
        pipe.exclude = backend
        pipe.attempts += 1
        delay = self.hooks.backoff(pipe.info(), pipe.attempts, self.rng)
        pipe.retry_at = now + delay
        self._dirty.add(pipe)
        self._plog(logging.WARNING, pipe, "link to %s %s failed: %s; retry in %.3fs",
                   backend.id, backend.url, why, delay)

    def _link_lost(self, link: Link, cause: InterruptionCause, why: str, now: float,
                   out: list[Action],
                   error: bool = True) -> None:
        """An open link failed: count the error; its pipe, if live on it, fails over."""
        backend = link.backend
        pipe = link.pipe if link.pipe is not None and link.pipe.link is link else None
        self._forget_link(link, out)
        if error:
            self.pool.record_failure(backend, now, why)
        if pipe is not None and pipe.state is not PipeState.CLOSING:
            self._interrupt(pipe, backend, cause, f"link to {backend.id} lost: {why}", now, out)

    def _on_link_connected(self, event: ev.LinkConnected, now: float, out: list[Action]) -> None:
        link = self._links.get(event.link)
        if link is None or link.state is not LinkState.DIALING:
            return
        pipe = link.pipe
        if pipe is None:
            self._forget_link(link, out)
            return
        link.state = LinkState.HANDSHAKING
        backend = link.backend
        default = self._backend_request(pipe, backend)
        request = self.hooks.backend_request(pipe.info(), backend.info(), default)
        try:
            data = self._link_request(link, request)
        except Exception as exc:  # h11 (under wsproto) refused what the hook returned
            log.error("wspipe_backend_request returned an invalid request (%s); sending the "
                      "default one", exc)
            data = self._link_request(link, default)
        self._send_link(link, data, out)

    def _link_request(self, link: Link, request: BackendRequest) -> bytes:
        headers = [(k.encode("latin-1", "replace"), v.encode("latin-1", "replace"))
                   for k, v in request.headers]
        return link.ws.send(Request(
            host=link.backend.address.host_header,
            target=request.target,
            subprotocols=[request.subprotocol] if request.subprotocol else [],
            extra_headers=headers,
        ))

    def _backend_request(self, pipe: Pipe, backend: Backend) -> BackendRequest:
        cfg = self.config
        req = pipe.request
        target = backend.address.target
        if cfg.forward_target:
            base_path, _, base_query = target.partition("?")
            path = base_path.rstrip("/") + req.path if req.path != "/" else base_path
            query = "&".join(q for q in (base_query, req.query) if q)
            target = path + ("?" + query if query else "")
        forward = {h.lower() for h in cfg.forward_headers}
        headers = [(k, v) for k, v in req.headers if k in forward]
        xff = req.header("x-forwarded-for")
        headers.append(("x-forwarded-for", f"{xff}, {req.peer}" if xff else req.peer))
        headers.append(("x-forwarded-proto", "https" if req.tls else "http"))
        headers.append((cfg.client_id_header.lower(), pipe.client_id))
        return BackendRequest(target=target, headers=tuple(headers), subprotocol=pipe.subprotocol)

    def _on_link_connect_failed(self, event: ev.LinkConnectFailed, now: float,
                                out: list[Action]) -> None:
        link = self._links.get(event.link)
        if link is not None and link.state is LinkState.DIALING:
            self._link_failed(link, LinkFailure.CONNECT, f"connect failed: {event.error}", now, out)

    def _on_link_eof(self, event: ev.LinkEOF, now: float, out: list[Action]) -> None:
        link = self._links.get(event.link)
        if link is None:
            return
        if link.state in (LinkState.DIALING, LinkState.HANDSHAKING):
            self._link_failed(link, LinkFailure.HANDSHAKE,
                              f"connection lost in handshake: {event.error}",
                              now, out)
        elif link.state is LinkState.CLOSING:
            self._forget_link(link, out)
        else:
            self._link_lost(link, InterruptionCause.EOF,
                            f"connection lost: {event.error}", now, out)

    def _on_link_sent(self, event: ev.LinkDataSent, now: float, out: list[Action]) -> None:
        link = self._links.get(event.link)
        if link is None:
            return
        link.pending -= event.nbytes
        pipe = link.pipe
        if (pipe is not None and pipe.backpressured and pipe.link is link
                and link.pending <= self.config.write_low_water):
            pipe.backpressured = False
            self._sync_client_pause(pipe, out)

    def _on_link_data(self, event: ev.LinkDataReceived, now: float, out: list[Action]) -> None:
        link = self._links.get(event.link)
        if link is None or link.state is LinkState.DIALING:
            return
        self._dirty.add(link)
        try:
            link.ws.receive_data(event.data)
        except RemoteProtocolError as exc:
            self._link_failed(link, LinkFailure.HANDSHAKE,
                              f"bad handshake response: {exc}", now, out)
            return
        except LocalProtocolError:
            return  # data after the close handshake: nothing to do with it
        self._pump_link(link, now, out)

    def _pump_link(self, link: Link, now: float, out: list[Action]) -> None:
        ws = link.ws
        try:
            for event in ws.events():
                if isinstance(event, _MESSAGE_EVENTS):
                    if not self._link_message(link, event, now, out):
                        return
                elif isinstance(event, AcceptConnection):
                    self._link_opened(link, now, out)
                elif isinstance(event, RejectConnection):
                    self._link_failed(link, LinkFailure.HANDSHAKE,
                                      f"handshake rejected with HTTP {event.status_code}", now, out)
                    return
                elif isinstance(event, Ping):
                    if (ws.state is ConnectionState.OPEN
                            and link.pending <= self.config.write_high_water):
                        self._send_link(link, ws.send(event.response()), out)
                elif isinstance(event, Pong):
                    link.pong_deadline = None
                    if not link.proven:
                        self._prove(link)
                elif isinstance(event, CloseConnection):
                    self._link_close(link, event, now, out)
                    return
                elif isinstance(event, RejectData):
                    pass
        except RemoteProtocolError as exc:
            self._link_failed(link, LinkFailure.HANDSHAKE,
                              f"bad handshake response: {exc}", now, out)

    def _link_opened(self, link: Link, now: float, out: list[Action]) -> None:
        cfg = self.config
        link.state = LinkState.OPEN
        if isinstance(link.ws, WSConnection) and link.ws.connection is not None:
            link.ws = link.ws.connection  # drop the handshake state (memory per idle link)
        pipe = link.pipe
        if pipe is None or pipe.link is not link:
            self._close_link(link, 1001, "client session ended", now, out)
            return
        if cfg.ping_interval:
            link.ping_at = now + cfg.ping_interval
        resumed = pipe.state is PipeState.INTERRUPTED
        duration = now - pipe.interrupted_at if pipe.interrupted_at is not None else 0.0
        pipe.state = PipeState.LINKED
        pipe.attempts = 0
        pipe.interrupted_at = pipe.retry_at = None
        pipe.last_backend = link.backend
        replayed = pipe.buffer.drain()
        for message in replayed:
            self._send_link(link, link.ws.send(_frame(message)), out)
        self.stats.messages_replayed += len(replayed)
        self._update_held(pipe)
        if pipe.pending > cfg.write_high_water:
            link.paused = True
            out.append(PauseLink(link.id))
        if resumed:
            self.stats.failovers += 1
            self._plog(logging.INFO, pipe, "resumed on %s after %.3fs, %d buffered messages "
                       "replayed", link.backend.id, duration, len(replayed))
            self._event(PipeEventKind.RESUMED, pipe, link.backend, now,
                        f"resumed on {link.backend.id}", duration=duration)
            pipe.cause = None
        else:
            self._plog(logging.INFO, pipe, "linked to %s after %.3fs", link.backend.id, duration)
            self._event(PipeEventKind.LINKED, pipe, link.backend, now,
                        f"linked to {link.backend.id}", duration=duration)
        if pipe.buffer_paused:
            self._resume_after_pause(pipe, now, out)

    def _resume_after_pause(self, pipe: Pipe, now: float, out: list[Action]) -> None:
        """The buffer drained: re-feed the held-back message and read the client again."""
        pipe.buffer_paused = False
        held_back, pipe.overflow = pipe.overflow, None
        if held_back is not None and not self._client_message(pipe, held_back, now, out):
            return
        pipe.paused_since = None
        self._sync_client_pause(pipe, out)
        self._pump_client(pipe, now, out)

    def _prove(self, link: Link) -> None:
        """The backend answered on this link: a success for the pool."""
        link.proven = True
        self.pool.record_success(link.backend)

    def _link_message(self, link: Link, event: TextMessage | BytesMessage, now: float,
                      out: list[Action]) -> bool:
        if not link.proven:
            self._prove(link)
        data = event.data
        n = len(data) if type(data) is not str else payload_size(data)
        pipe = link.pipe
        if (event.message_finished and link.assembler.idle and pipe is not None
                and n <= self.config.max_message_size and pipe.state is not PipeState.CLOSING
                and pipe.state is not PipeState.CLOSED):
            # Fast path: a whole one-frame message, re-sent as it came.
            self.stats.messages_out += 1
            self.stats.bytes_out += n
            self._send_client(pipe, pipe.ws.send(event), out)
            return True
        if link.assembler.size + n > self.config.max_message_size:
            log.warning("backend %s sent a message over max_message_size on link %d",
                        link.backend.id, link.id)
            pipe = link.pipe if link.pipe is not None and link.pipe.link is link else None
            if pipe is not None:
                self._detach_link(pipe)
            self._close_link(link, 1009, "message too big", now, out)
            self.pool.record_failure(link.backend, now, "message over max_message_size")
            if pipe is not None:
                self._interrupt(pipe, link.backend, InterruptionCause.MESSAGE_TOO_BIG,
                                f"backend {link.backend.id} sent a message too big", now, out)
            return False
        prior = link.assembler.size
        message = link.assembler.feed(event, n)
        if message is None:
            return True
        pipe = link.pipe
        if pipe is None or pipe.state in (PipeState.CLOSING, PipeState.CLOSED):
            return True  # written by the backend before it saw our Close: nobody to give it to
        self.stats.messages_out += 1
        self.stats.bytes_out += prior + n
        self._send_client(pipe, pipe.ws.send(_frame(message)), out)
        return True

    def _link_close(self, link: Link, event: CloseConnection, now: float,
                    out: list[Action]) -> None:
        ws = link.ws
        if ws.state is ConnectionState.OPEN:
            # A protocol violation by the backend (wsproto's ParseFailed).
            self._send_link(link, ws.send(CloseConnection(code=event.code,
                                                          reason=event.reason)), out)
            self._link_lost(link, InterruptionCause.PROTOCOL,
                            f"protocol error ({event.code}): {event.reason}",
                            now, out)
            return
        if link.state is LinkState.CLOSING:
            self._forget_link(link, out)
            return
        # The backend closed: answer at once and write nothing more on this link.
        if ws.state is ConnectionState.REMOTE_CLOSING:
            self._send_link(link, ws.send(event.response()), out)
        pipe = link.pipe if link.pipe is not None and link.pipe.link is link else None
        if event.code in self.config.interruption_codes or pipe is None:
            self._link_lost(link, InterruptionCause.CLOSE_CODE,
                            f"backend closed with {event.code} {event.reason}".rstrip(), now, out)
            return
        self._forget_link(link, out)
        self._plog(logging.INFO, pipe, "backend %s ended the session with %d %s",
                   link.backend.id, event.code, event.reason)
        self._end_pipe(pipe, event.code, event.reason or "", now, out)

    def _link_timer(self, link: Link, now: float, out: list[Action]) -> None:
        cfg = self.config
        if link.state in (LinkState.DIALING, LinkState.HANDSHAKING):
            if now >= link.deadline:
                self._link_failed(link, LinkFailure.TIMEOUT, "handshake timed out", now, out)
            return
        if link.state is LinkState.CLOSING:
            if now >= link.deadline:
                self._forget_link(link, out)
            return
        if link.paused:
            # Not reading this link (its client is slow), so its pong could not be
            # seen: keepalive waits until reading resumes.
            link.pong_deadline = None
            if link.ping_at is not None:
                link.ping_at = now + cfg.ping_interval
            return
        if link.pong_deadline is not None and now >= link.pong_deadline:
            self._link_lost(link, InterruptionCause.PING_TIMEOUT,
                            "no pong within ping_timeout", now, out)
            return
        if link.ping_at is not None and now >= link.ping_at:
            link.ping_at = now + cfg.ping_interval
            if link.pong_deadline is None:
                self._send_link(link, link.ws.send(Ping(payload=b"wspipe")), out)
                link.pong_deadline = now + cfg.ping_timeout

    # ------------------------------------------------------------- output and flow control

    def _send_client(self, pipe: Pipe, data: bytes, out: list[Action]) -> None:
        out.append(SendToClient(pipe.conn, data))
        pipe.pending += len(data)
        link = pipe.link
        if (pipe.pending > self.config.write_high_water and link is not None
                and link.state is LinkState.OPEN and not link.paused):
            link.paused = True
            out.append(PauseLink(link.id))

    def _send_link(self, link: Link, data: bytes, out: list[Action]) -> None:
        out.append(SendToLink(link.id, data))
        link.pending += len(data)
        pipe = link.pipe
        if (pipe is not None and not pipe.backpressured and pipe.link is link
                and link.pending > self.config.write_high_water):
            pipe.backpressured = True
            self._sync_client_pause(pipe, out)

    def _sync_client_pause(self, pipe: Pipe, out: list[Action]) -> None:
        want = pipe.backpressured or pipe.buffer_paused
        if want != pipe.client_paused and pipe.state is not PipeState.CLOSING:
            pipe.client_paused = want
            out.append(PauseClient(pipe.conn) if want else ResumeClient(pipe.conn))

    # ------------------------------------------------------------- timers, hooks, logs

    def _reschedule(self) -> None:
        if self.pool.changed:
            # A cool-down ends on time even with no traffic, so the pool's state
            # (and readiness) is right without a pipe asking for a backend.
            self.pool.changed = False
            self._deadlines.set(("b", 0), self.pool.next_deadline())
        self._deadlines.set(("m", 0), self.migrations.next_deadline())
        if not self._dirty:
            return
        max_interruption = self.config.max_interruption
        for item in self._dirty:
            if isinstance(item, Pipe):
                self._deadlines.set(("p", item.conn), item.next_deadline(max_interruption))
            elif isinstance(item, Link):
                self._deadlines.set(("l", item.id), item.next_deadline())
            else:
                self._deadlines.set(("c", item.conn), item.deadline)
        self._dirty.clear()

    def _event(self, kind: PipeEventKind, pipe: Pipe, backend: Backend | None, now: float,
               reason: str = "", *, code: int | None = None,
               duration: float | None = None) -> None:
        extra = {"dropped_messages": float(pipe.dropped_messages)} if pipe.dropped_messages else {}
        self.hooks.pipe_event(PipeEvent(kind, pipe.info(), backend.info() if backend else None,
                                        now, reason, code, duration, extra, pipe.cause))

    def _plog(self, level: int, pipe: Pipe, msg: str, *args: object) -> None:
        if not log.isEnabledFor(level):
            return
        backend = pipe.link.backend if pipe.link is not None else pipe.last_backend
        backend_id = backend.id if backend is not None else "-"
        log.log(level, "pipe %s client %s backend %s: " + msg, pipe.id, pipe.client_id,
                backend_id, *args,
                extra={"pipe": pipe.id, "client_id": pipe.client_id, "backend": backend_id})
