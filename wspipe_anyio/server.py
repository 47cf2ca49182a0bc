"""The proxy server: listeners, client connections, links, timers and shutdown.

Every socket event becomes a :mod:`wspipe_core.events` event fed to
:meth:`wspipe_core.Proxy.handle`; the actions it returns are executed by
:meth:`ProxyServer.dispatch`, synchronously and in order. The driver decides
nothing about WebSocket, clients or backends: it only moves bytes.

:class:`ProxyServer` is also the proxy's control interface
(:class:`wspipe_anyio.control.ProxyControl`): the admin API and other tools read
and change the proxy through its public methods only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import random
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

import anyio
import pluggy
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup, TaskStatus
from anyio.streams.tls import TLSStream

from wspipe_core import (
    BackendHealth,
    BackendInfo,
    MigrationInfo,
    PipeInfo,
    Proxy,
    ProxyConfig,
    make_plugin_manager,
)
from wspipe_core import actions as act
from wspipe_core import events as ev
from wspipe_core.buffer import MemoryBudget
from wspipe_core.reconfigure import Plan
from wspipe_core.stats import Stats
from wspipe_core.store import StoreAction

from .connection import Channel, SocketChannel, SocketIO
from .discovery import RESOLVE_TIMEOUT, DnsResolver, ResolveError, Resolver
from .metrics import Metrics
from .speedups import fast_wire
from .store.runner import StoreRunner

if TYPE_CHECKING:
    from .store.redis import RedisStore
from .timers import TimerLoop

log = logging.getLogger("wspipe.driver")

#: A listen address: host and port (0 picks a free port).
Address = tuple[str, int]

#: Pause after a failed ``accept()`` (e.g. out of file descriptors) before the next.
ACCEPT_RETRY_DELAY = 0.1
#: Most bytes of a health check's answer read (its head ends sooner).
MAX_PROBE_ANSWER = 16 * 1024
#: After a 101, the longest wait for the backend to answer the probe's Close.
PROBE_LINGER = 1.0


class _Probe:
    """A health check in flight: cancelled by ``CloseProbe`` until it has reported."""

    def __init__(self, deadline: float) -> None:
        self.scope = anyio.CancelScope(deadline=deadline)
        #: ``ProbeResult`` was fed: a ``CloseProbe`` now brings the bytes to send.
        self.reported = False
        self.closed = False
        self.goodbye = b""

    def close(self, data: bytes) -> None:
        self.closed = True
        if self.reported:
            self.goodbye = data
        else:
            self.scope.cancel()


class ProxyServer:
    """A wspipe proxy bound to one or more listen addresses.

    Use it as an async context manager (binds, starts the tasks; leaving it shuts
    down gracefully) and wait in :meth:`serve`::

        async with ProxyServer(ProxyConfig(backends=("ws://127.0.0.1:9000",))) as server:
            print(server.ports)
            await server.serve()        # until server.shutdown() is called

    or start it in a task group with ``server = await tg.start(ProxyServer(cfg).run)``.

    It implements :class:`wspipe_anyio.control.ProxyControl` (pool, pipes,
    migrations, counters, :attr:`metrics`), which the admin API drives.

    :param config: Limits, timeouts and the start-up backends (``config.backends``).
    :param listen: Addresses to listen on for clients.
    :param plugins: Plugin objects or module paths (see ``make_plugin_manager``).
    :param load_entrypoints: Also load plugins from the ``wspipe`` entry-point group.
    :param blocked_plugins: Plugin names not to register.
    :param pm: A ready plugin manager; replaces the three arguments above.
    :param ssl_context: Serve clients over TLS with this context.
    :param backend_ssl_context: Context for ``wss://`` backends (default: system CAs,
        verification on).
    :param connect_timeout: Longest TCP (and TLS) connect to a backend; default
        ``config.link_timeout``.
    :param close_linger: After closing a socket, the longest time spent flushing it
        and waiting for the peer's EOF.
    :param shutdown_grace: Longest time :meth:`shutdown` waits for clients and links
        to close before it cancels what is left.
    :param rng: Random source of the core (for reproducible backend choices).
    :param store: Share leases and the pool registry with a fleet through this store
        (see :mod:`wspipe_anyio.store`); ``None``: a self-contained proxy.
    :param instance: This instance's id in the fleet (default: host, pid and a random tag).
    :param reuse_port: Bind the listeners with ``SO_REUSEPORT`` (``--workers``).
    :param resolver: Answers discovery queries of ``dns+``/``srv+`` backend entries
        (default :class:`~wspipe_anyio.discovery.DnsResolver`).
    :raises ConfigError: A plugin cannot be loaded or a start-up backend URL is invalid.
    """

    def __init__(
        self,
        config: ProxyConfig,
        *,
        listen: Sequence[Address] = (("127.0.0.1", 8080),),
        plugins: Iterable[object | str] = (),
        load_entrypoints: bool = False,
        blocked_plugins: Iterable[str] = (),
        pm: pluggy.PluginManager | None = None,
        ssl_context: ssl.SSLContext | None = None,
        backend_ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float | None = None,
        close_linger: float = 2.0,
        shutdown_grace: float = 10.0,
        rng: random.Random | None = None,
        store: RedisStore | None = None,
        instance: str | None = None,
        reuse_port: bool = False,
        resolver: Resolver | None = None,
    ) -> None:
        if pm is None:
            pm = make_plugin_manager(config, plugins=plugins, load_entrypoints=load_entrypoints,
                                     blocked=blocked_plugins)
        self.config = config
        if store is not None and instance is None:
            instance = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        #: This instance's id in the fleet (``None`` without a store).
        self.instance = instance if store is not None else None
        self.proxy = Proxy(config, pm=pm, rng=rng, wire=fast_wire(),
                           instance=self.instance)
        self._store = store
        self._runner = (StoreRunner(store, instance, self._feed_safely, self.describe,
                                    member_ttl=config.lease_ttl, timeout=config.store_timeout)
                        if store is not None and instance is not None else None)
        self._reuse_port = reuse_port
        self._started_at = time.time()
        #: The plain TCP sockets' shared read buffer and pending writes (connection.py).
        self._io = SocketIO(self._spawn_writer)
        self._listen = tuple(listen)
        self._ssl_context = ssl_context
        self._backend_ssl_context = backend_ssl_context
        self._connect_timeout = connect_timeout or config.link_timeout
        self._close_linger = close_linger
        self._shutdown_grace = shutdown_grace
        self._clients: dict[int, Channel | SocketChannel] = {}
        self._links: dict[int, Channel | SocketChannel] = {}
        self._probes: dict[int, _Probe] = {}
        self._resolver: Resolver = resolver if resolver is not None else DnsResolver()
        self._conn_ids = itertools.count(1)
        self._listeners: list[SocketListener] = []
        self._timers: TimerLoop | None = None
        self._tg: TaskGroup | None = None
        #: The accept loops' scope: cancelled before the listeners are closed.
        self._accepting: anyio.CancelScope | None = None
        self._accept_done: anyio.Event | None = None
        self._stopping = False
        self._stopped: anyio.Event | None = None  # anyio objects need a running loop
        #: ``anyio.current_time`` without its look-up of the running library (per event).
        self._clock: Callable[[], float] = anyio.current_time
        #: Exceptions the core raised into the driver (a bug); each closed one socket.
        self.internal_errors = 0
        #: The Prometheus metrics of this proxy, from construction on (``/metrics``).
        self.metrics = Metrics(self, self.proxy.pm)

    # Library face.

    @property
    def addresses(self) -> list[Address]:
        """The bound listen addresses (host, port), after start."""
        out: list[Address] = []
        for listener in self._listeners:
            address = listener.extra(SocketAttribute.local_address)
            assert isinstance(address, tuple)
            out.append((str(address[0]), int(address[1])))
        return out

    @property
    def ports(self) -> list[int]:
        """The bound listen ports, after start."""
        return [port for _, port in self.addresses]

    @property
    def port(self) -> int:
        """The first bound listen port."""
        return self.ports[0]

    @property
    def stopping(self) -> bool:
        """Whether :meth:`shutdown` has begun (no client is accepted any more)."""
        return self._stopping

    @property
    def stats(self) -> Stats:
        """The core's counters since start."""
        return self.proxy.stats

    @property
    def budget(self) -> MemoryBudget:
        """The core's memory budget of the buffers."""
        return self.proxy.budget

    @property
    def connections(self) -> int:
        """Client connections, handshaking or open."""
        return self.proxy.connections

    def now(self) -> float:
        """The core's clock: ``anyio.current_time()``."""
        return anyio.current_time()

    def add_backend(self, url: str, *, weight: float = 1.0) -> BackendInfo:
        """Register a backend in the pool; pipes waiting for one retry now.

        :raises InvalidBackendURL: Not a ``ws://``/``wss://`` URL, or a bad weight.
        :raises BackendAlreadyRegistered: The URL is in the pool already.
        """
        info = self.proxy.add_backend(url, weight=weight, now=anyio.current_time())
        self.execute([])  # pipes waiting for a backend retry now: re-arm the timer loop
        return info

    def remove_backend(self, id_or_url: str, *, migrate: bool = False) -> None:
        """Drain a backend: it takes no new pipe and leaves the pool once empty.

        With ``migrate`` its pipes move to other backends, paced by the core at
        ``config.migrate_rate`` pipes a second over the whole proxy (the first at
        once); a pipe moves only while another backend is up, and nothing is lost
        (its link is closed with 1001, it fails over and replays). Follow it with
        :meth:`migrations`.

        :raises UnknownBackend: No backend with that id or URL.
        """
        self.execute(self.proxy.remove_backend(id_or_url, migrate=migrate,
                                                now=anyio.current_time()))

    def migrate_pipe(self, pipe_id: str) -> None:
        """Move one pipe to another backend now (its buffer is replayed there)."""
        self.execute(self.proxy.migrate_pipe(pipe_id, now=anyio.current_time()))

    def reconfigure(self, config: ProxyConfig) -> Plan:
        """Apply a reloaded configuration (:meth:`wspipe_core.Proxy.reconfigure`): new
        backends registered, removed ones drained with migrate, live keys changed;
        restart-only keys keep their values (the plan lists them).

        :raises ConfigError: It cannot be applied; nothing changed.
        """
        change, actions = self.proxy.reconfigure(config, now=anyio.current_time())
        self.config = change.config
        self.execute(actions)
        return change

    def backends(self) -> list[BackendInfo]:
        """Snapshots of the pool's backends."""
        return self.proxy.backends()

    def pipes(self) -> list[PipeInfo]:
        """Snapshots of the live pipes."""
        return self.proxy.pipes()

    def migrations(self) -> list[MigrationInfo]:
        """The drains with migrate under way (moved, remaining, waiting), one per backend."""
        return self.proxy.migrations_under_way()

    def backend_health(self) -> list[BackendHealth]:
        """The health of every backend: ejection end, last and next health check."""
        return self.proxy.backend_health()

    def queued_bytes(self) -> int:
        """Bytes waiting in the outboxes of every client and link: asked for by the
        core, not written to the socket yet (``wspipe_outbox_bytes``)."""
        return (sum(channel.queued for channel in self._clients.values())
                + sum(channel.queued for channel in self._links.values()))

    async def __aenter__(self) -> Self:
        self._stopped = anyio.Event()
        self._clock = _event_loop_clock()
        self._timers = TimerLoop(self.proxy.next_deadline, self._fire_timer)
        try:
            for host, port in self._listen:
                try:
                    multi = await anyio.create_tcp_listener(local_host=host, local_port=port,
                                                            reuse_port=self._reuse_port)
                except OSError as exc:
                    raise OSError(exc.errno, f"cannot listen on {host}:{port}: "
                                             f"{exc.strerror or exc}") from exc
                self._listeners.extend(cast(Sequence[SocketListener], multi.listeners))
        except BaseException:
            for listener in self._listeners:
                await anyio.aclose_forcefully(listener)
            self._listeners.clear()
            raise
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._timers.run)
        if self._runner is not None:
            tg.start_soon(self._run_store, self._runner)
        self._accepting = anyio.CancelScope()
        self._accept_done = anyio.Event()
        tg.start_soon(self._accept_all)
        scheme = "wss" if self._ssl_context else "ws"
        for host, port in self.addresses:
            shown = f"[{host}]" if ":" in host else host
            log.info("listening on %s://%s:%d", scheme, shown, port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        if exc is None:
            await self.shutdown()
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(exc_type, exc, tb)

    async def serve(self) -> None:
        """Wait until :meth:`shutdown` has finished."""
        assert self._stopped is not None, "serve() before the server was started"
        await self._stopped.wait()

    async def run(self, *, task_status: TaskStatus[ProxyServer] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Bind, report ``self`` to ``tg.start()``, and serve until shut down."""
        async with self:
            task_status.started(self)
            await self.serve()

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, close every client (1001) and link, and wait for them.

        Waits until the core is idle and every socket is closed, at most ``grace``
        seconds (default ``shutdown_grace``); whatever is left is then cancelled.
        """
        assert self._stopped is not None, "shutdown() before the server was started"
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        grace = self._shutdown_grace if grace is None else grace
        log.info("shutting down: %d client(s), %d link(s)", len(self._clients), len(self._links))
        # No task may wait on a listening socket when it is closed (its descriptor
        # could be reused at once): the accept loops end first.
        if self._accepting is not None and self._accept_done is not None:
            self._accepting.cancel()
            await self._accept_done.wait()
        for listener in self._listeners:
            await listener.aclose()
        self.execute(self.proxy.shutdown(anyio.current_time()))
        with anyio.move_on_after(grace) as scope:
            # Bounded by ``grace``; each round waits for the next socket to finish.
            while not (self.proxy.idle and not self._clients and not self._links):
                await anyio.sleep(0.01)
        if scope.cancelled_caught:
            log.warning("shutdown grace of %.1fs over: cancelling %d client(s), %d link(s)",
                        grace, len(self._clients), len(self._links))
        if self._runner is not None:  # give the leases back
            await self._runner.flush(min(grace, 1.0))
        for channel in [*self._clients.values(), *self._links.values()]:
            channel.scope.cancel()
        self._stopped.set()

    # Feeding the core and executing its actions.

    def _feed(self, event: ev.Event) -> None:
        self.execute(self.proxy.handle(event, self._clock()))

    def _fire_timer(self, now: float) -> None:
        try:
            actions = self.proxy.handle_timer(now)
        except Exception:
            # A core bug must not take every client down with the timer task.
            self.internal_errors += 1
            log.exception("handle_timer raised; the server carries on")
            return
        self.execute(actions)

    def execute(self, actions: list[act.Action]) -> None:
        """Dispatch actions a core call returned and re-arm the timer loop.

        For callers that use ``self.proxy`` directly.
        """
        self.dispatch(actions)
        if self._timers is not None:
            self._timers.poke()

    def dispatch(self, actions: Iterable[act.Action]) -> None:
        """Execute the core's actions in order, then write what they queued on plain
        sockets (:meth:`SocketIO.flush`). Synchronous: no ``await`` here."""
        self._dispatch(actions)
        if self._io.ready:
            self._io.flush()

    def _dispatch(self, actions: Iterable[act.Action]) -> None:
        for action in actions:
            match action:
                case act.SendToClient(conn, data):
                    if (client := self._clients.get(conn)) is not None:
                        client.send(data)
                case act.SendToLink(link, data):
                    if (channel := self._links.get(link)) is not None:
                        channel.send(data)
                case act.CloseClient(conn):
                    if (client := self._clients.get(conn)) is not None:
                        client.close()
                case act.CloseLink(link):
                    if (channel := self._links.get(link)) is not None:
                        channel.close()
                case act.PauseClient(conn):
                    if (client := self._clients.get(conn)) is not None:
                        client.pause()
                case act.ResumeClient(conn):
                    if (client := self._clients.get(conn)) is not None:
                        client.resume()
                case act.PauseLink(link):
                    if (channel := self._links.get(link)) is not None:
                        channel.pause()
                case act.ResumeLink(link):
                    if (channel := self._links.get(link)) is not None:
                        channel.resume()
                case act.OpenLink():
                    self._open_link(action)
                case act.ProbeBackend():
                    self._start_probe(action)
                case act.CloseProbe(probe, data):
                    if (running := self._probes.get(probe)) is not None:
                        running.close(data)
                case StoreAction():
                    if self._runner is not None:
                        self._runner.submit(action)
                case act.ResolveBackends():
                    assert self._tg is not None
                    self._tg.start_soon(self._resolve, action)
                case _:
                    raise RuntimeError(f"unexpected action: {action!r}")

    # The fleet's store.

    @property
    def reuse_port(self) -> bool:
        """Whether the listeners share their ports (``SO_REUSEPORT``, ``--workers``)."""
        return self._reuse_port

    @property
    def store(self) -> StoreRunner | None:
        """The store's runner (health, counters), with a store."""
        return self._runner

    def describe(self) -> dict[str, Any]:
        """This instance as ``GET /fleet`` lists it."""
        backends = self.proxy.backends()
        return {
            "instance": self.instance, "host": socket.gethostname(), "pid": os.getpid(),
            "started": round(self._started_at, 3), "stopping": self._stopping,
            "listen": [f"{h}:{p}" for h, p in self.addresses],
            "pipes": len(self.proxy.pipes()), "connections": self.proxy.connections,
            "backends": {"total": len(backends),
                         "up": sum(1 for b in backends if b.state.value == "up")},
            "store": None if self._runner is None else ("up" if self._runner.up else "down"),
        }

    def fleet(self) -> dict[str, Any]:
        """The fleet (``GET /fleet``): the instances the store listed at its last poll
        (at most a second old), or just this one without a store."""
        runner = self._runner
        if runner is None:
            return {"instance": None, "store": None, "members": 1,
                    "instances": [self.describe()]}
        return {"instance": self.instance, "store": "up" if runner.up else "down",
                "members": max(1, runner.members),
                "instances": runner.instances or [self.describe()],
                "counters": {"leases": len(self.proxy.fleet.leases) if self.proxy.fleet else 0,
                             "errors": runner.errors, "dropped": runner.dropped,
                             "lease_conflicts": runner.lease_conflicts,
                             "garbage": runner.store.garbage}}

    def _feed_safely(self, event: ev.Event) -> None:
        try:
            self._feed(event)
        except Exception:
            self.internal_errors += 1
            log.exception("the core raised on a store event; the server carries on")

    async def _run_store(self, runner: StoreRunner) -> None:
        assert self._store is not None
        while True:  # bounded by cancellation at shutdown; one attempt a second
            try:
                async with self._store:
                    await runner.run()
            except Exception as exc:
                runner.failed(exc)
                log.warning("store client failed (%s): starting it again", exc)
            await anyio.sleep(1.0)

    # Clients.

    async def _accept_all(self) -> None:
        assert self._accepting is not None
        try:
            with self._accepting:
                async with anyio.create_task_group() as tg:
                    for listener in self._listeners:
                        tg.start_soon(self._accept_loop, listener)
        finally:
            assert self._accept_done is not None
            self._accept_done.set()

    async def _accept_loop(self, listener: SocketListener) -> None:
        assert self._tg is not None
        raw = listener.extra(SocketAttribute.raw_socket)
        raw.setblocking(False)
        while True:
            try:
                sock, address = raw.accept()
            except BlockingIOError:
                await anyio.wait_readable(raw)
                continue
            except OSError as exc:
                if exc.errno in (errno.EBADF, errno.EINVAL):  # closed
                    return
                log.warning("accept failed: %s", exc)
                await anyio.sleep(ACCEPT_RETRY_DELAY)
                continue
            _prepare(sock)
            self._tg.start_soon(self._serve_client, next(self._conn_ids), sock,
                                str(address[0]))

    async def _serve_client(self, conn: int, sock: socket.socket, peer: str) -> None:
        name = f"conn={conn}"
        on_data = lambda data: self._feed(ev.ClientDataReceived(conn, data))  # noqa: E731
        on_sent = lambda n: self._feed(ev.ClientDataSent(conn, n))  # noqa: E731
        on_eof = lambda why: self._feed(ev.ClientEOF(conn))  # noqa: E731
        channel: Channel | SocketChannel
        if self._ssl_context is None:
            channel = SocketChannel(name, on_data=on_data, on_sent=on_sent, on_eof=on_eof,
                                    linger=self._close_linger, io=self._io)
            channel.attach(sock)  # an immediate refusal (503) is still written
        else:
            channel = Channel(name, on_data=on_data, on_sent=on_sent, on_eof=on_eof,
                              linger=self._close_linger)
        self._clients[conn] = channel
        log.debug("%s: accepted from %s", name, peer)
        try:
            with channel.scope:
                self._feed(ev.ClientConnected(conn, peer, tls=self._ssl_context is not None))
                if isinstance(channel, SocketChannel):
                    await channel.run(sock)
                    return
                # The core's handshake timeout covers the TLS handshake too: a
                # CloseClient cancels it through channel.scope.
                try:
                    stream = await SocketStream.from_socket(sock)
                    byte_stream = await TLSStream.wrap(
                        stream, server_side=True, ssl_context=self._ssl_context,
                        standard_compatible=False)
                except (*_CONNECT_ERRORS, anyio.EndOfStream) as exc:
                    log.debug("%s: TLS handshake failed: %r", name, exc)
                    self._feed(ev.ClientEOF(conn))
                    return
                await channel.run(byte_stream)
        except Exception:
            self.internal_errors += 1
            log.exception("%s: internal error; connection closed", name)
        finally:
            sock.close()
            if self._clients.get(conn) is channel:
                del self._clients[conn]
            log.debug("%s: closed", name)

    def _spawn_writer(self, channel: SocketChannel) -> None:
        assert self._tg is not None
        self._tg.start_soon(self._run_writer, channel)

    async def _run_writer(self, channel: SocketChannel) -> None:
        try:
            await channel.write_loop()
        except Exception:
            self.internal_errors += 1
            log.exception("%s: internal error in the writer; connection closed", channel.name)
            channel.fail("internal error")

    # Links.

    def _open_link(self, action: act.OpenLink) -> None:
        assert self._tg is not None
        link = action.link
        on_data = lambda data: self._feed(ev.LinkDataReceived(link, data))  # noqa: E731
        on_sent = lambda n: self._feed(ev.LinkDataSent(link, n))  # noqa: E731
        on_eof = lambda why: self._feed(ev.LinkEOF(link, why))  # noqa: E731
        channel: Channel | SocketChannel
        if action.tls:
            channel = Channel(f"link={link}", on_data=on_data, on_sent=on_sent,
                              on_eof=on_eof, linger=self._close_linger)
        else:
            channel = SocketChannel(f"link={link}", on_data=on_data, on_sent=on_sent,
                                    on_eof=on_eof, linger=self._close_linger, io=self._io)
        self._links[link] = channel
        self._tg.start_soon(self._run_link, action, channel)

    async def _run_link(self, action: act.OpenLink, channel: Channel | SocketChannel) -> None:
        link = action.link
        try:
            with channel.scope:
                log.debug("link=%d: connecting to %s", link, action.url)
                sock: socket.socket | None = None
                stream: TLSStream | None = None
                try:
                    with anyio.fail_after(self._connect_timeout):
                        if action.tls:
                            stream = await anyio.connect_tcp(
                                action.host, action.port, ssl_context=self._backend_context(),
                                tls_hostname=action.server_name or action.host,
                                tls_standard_compatible=False)
                        else:
                            sock = await connect_socket(action.host, action.port)
                except (*_CONNECT_ERRORS, TimeoutError) as exc:
                    why = "connect timed out" if isinstance(exc, TimeoutError) else str(exc)
                    log.debug("link=%d: connect to %s failed: %s", link, action.url, why)
                    self._feed(ev.LinkConnectFailed(link, why or repr(exc)))
                    return
                if isinstance(channel, SocketChannel):
                    assert sock is not None
                    channel.attach(sock)
                    try:
                        self._feed(ev.LinkConnected(link))
                    except BaseException:
                        sock.close()
                        raise
                    await channel.run(sock)
                else:
                    assert stream is not None
                    self._feed(ev.LinkConnected(link))
                    await channel.run(stream)
        except Exception:
            self.internal_errors += 1
            log.exception("link=%d: internal error; link closed", link)
        finally:
            if self._links.get(link) is channel:
                del self._links[link]
            log.debug("link=%d: closed", link)

    # Health checks: connect, write the core's request, read the answer head, report.

    def _start_probe(self, action: act.ProbeBackend) -> None:
        assert self._tg is not None
        # A safety net only: the core closes the probe at its own timeout first.
        probe = _Probe(anyio.current_time() + action.timeout + 1.0)
        self._probes[action.probe] = probe
        self._tg.start_soon(self._run_probe, action, probe)

    async def _run_probe(self, action: act.ProbeBackend, probe: _Probe) -> None:
        try:
            with probe.scope:
                try:
                    stream: SocketStream | TLSStream
                    with anyio.fail_after(action.timeout):
                        if action.tls:
                            stream = await anyio.connect_tcp(
                                action.host, action.port, ssl_context=self._backend_context(),
                                tls_hostname=action.server_name or action.host,
                                tls_standard_compatible=False)
                        else:
                            stream = await anyio.connect_tcp(action.host, action.port)
                except (*_CONNECT_ERRORS, TimeoutError) as exc:
                    why = "connect timed out" if isinstance(exc, TimeoutError) else str(exc)
                    self._report_probe(action.probe, probe, b"", why or repr(exc))
                    return
                async with stream:
                    await self._probe_stream(action, probe, stream)
        except Exception:
            self.internal_errors += 1
            log.exception("probe=%d: internal error; health check closed", action.probe)
        finally:
            self._probes.pop(action.probe, None)

    async def _probe_stream(self, action: act.ProbeBackend, probe: _Probe,
                            stream: SocketStream | TLSStream) -> None:
        answer = b""
        try:
            await stream.send(action.request)
            while b"\r\n\r\n" not in answer and len(answer) < MAX_PROBE_ANSWER:
                answer += await stream.receive(MAX_PROBE_ANSWER - len(answer))
        except anyio.EndOfStream:
            pass
        except _CONNECT_ERRORS as exc:
            if not answer:
                self._report_probe(action.probe, probe, b"", str(exc) or repr(exc))
                return
        self._report_probe(action.probe, probe, answer, None)
        if probe.goodbye:
            # A clean close after a 101: the backend sees a Close, not a reset.
            with anyio.move_on_after(PROBE_LINGER), contextlib.suppress(
                    *_CONNECT_ERRORS, anyio.EndOfStream):
                await stream.send(probe.goodbye)
                for _ in range(64):  # bounded: until the backend closes
                    await stream.receive()

    def _report_probe(self, probe_id: int, probe: _Probe, data: bytes,
                      error: str | None) -> None:
        probe.reported = True
        self._feed(ev.ProbeResult(probe_id, data, error))

    # Discovery: resolve a name for the core.

    async def _resolve(self, query: act.ResolveBackends) -> None:
        addresses: tuple[tuple[str, int], ...] = ()
        error = None
        try:
            with anyio.fail_after(RESOLVE_TIMEOUT):
                found = await self._resolver.resolve(query)
            addresses = tuple((str(host), int(port)) for host, port in found)
        except TimeoutError:
            error = f"no answer within {RESOLVE_TIMEOUT:g}s"
        except (ResolveError, OSError) as exc:
            error = str(exc) or repr(exc)
        except Exception as exc:
            self.internal_errors += 1
            log.exception("resolver raised for %s", query.name)
            error = f"resolver failed: {exc!r}"
        self._feed(ev.BackendsResolved(query.query, addresses, error))

    def _backend_context(self) -> ssl.SSLContext:
        if self._backend_ssl_context is None:
            self._backend_ssl_context = ssl.create_default_context()
        return self._backend_ssl_context


def _event_loop_clock() -> Callable[[], float]:
    """The running event loop's own clock, which ``anyio.current_time()`` reads: the
    asyncio loop's ``time`` or ``trio.current_time`` (else anyio's)."""
    clock: Callable[[], float] = anyio.current_time
    try:
        clock = asyncio.get_running_loop().time
    except RuntimeError:  # not asyncio
        with contextlib.suppress(ImportError):
            import trio
            clock = trio.current_time
    with contextlib.suppress(Exception):
        if abs(clock() - anyio.current_time()) < 0.1:
            return clock
    return anyio.current_time


def _prepare(sock: socket.socket) -> None:
    sock.setblocking(False)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def connect_socket(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket (``TCP_NODELAY``) to ``host``: each address
    ``getaddrinfo`` gives is tried in turn.

    :raises OSError: No address could be connected (the last failure).
    """
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    failure: OSError = OSError(f"no address for {host!r}")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            _prepare(sock)
            code = sock.connect_ex(address)
            if code in (errno.EINPROGRESS, errno.EAGAIN):
                await anyio.wait_writable(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, f"connect to {address[0]}:{address[1]} failed: "
                                    f"{os.strerror(code)}")
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise failure


#: Failures of a TCP connect or TLS handshake.
_CONNECT_ERRORS = (OSError, ssl.SSLError, anyio.BrokenResourceError, anyio.ClosedResourceError)

