"""The proxy: the one entry point of the core, routing events to the modules that decide.

``Proxy.handle(event, now)`` takes an input event and returns the actions the
driver must execute; ``next_deadline()`` says when the core next needs to be
woken and ``handle_timer(now)`` wakes it. Pool operations (``add_backend``,
``remove_backend``, ``migrate_pipe``) and ``shutdown`` are methods too. After
calling any of them the driver re-reads ``next_deadline()``.

This module decides nothing itself; see docs/architecture.md for which module
decides what (handshake, session, link, relay, flow, keepalive, pool, migration).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

import pluggy

from . import events as ev
from .actions import Action
from .buffer import MemoryBudget
from .config import ProxyConfig
from .deadlines import Timers
from .discovery import Discovery, is_discovered, parse_target
from .errors import (
    BackendAlreadyRegistered,
    BackendNotAllowed,
    UnknownBackend,
    UsageError,
)
from .fleet import FLEET_EVENTS, Fleet
from .flow import Flow
from .handshake import Claim, Handshakes, PendingClient
from .health import BackendHealth, HealthChecks
from .hooks import Hooks, make_plugin_manager
from .info import BackendInfo, BackendState, MigrationInfo, PipeInfo, PipeState
from .keepalive import Keepalive
from .link import Link, Links, LinkState
from .migration import Migrations, Move
from .pipe import Pipe
from .pool import Backend, Pool
from .reconfigure import Plan, plan
from .relay import Relay
from .session import Sessions
from .stats import Stats
from .store import EntryState as _Entry
from .store import RegistryEntry
from .wire import Wire

log = logging.getLogger("wspipe.proxy")


class Proxy:
    """The sans-IO proxy: clients, pipes, links and the pool, driven by events and time.

    :param config: Limits, timeouts and policies (defaults if omitted).
    :param pm: A plugin manager from :func:`make_plugin_manager`; built from
        ``config`` if omitted.
    :param rng: The random source handed to strategies and backoff (tests pass a
        seeded ``random.Random``).
    :param instance: This instance's id in a fleet sharing a store; the core then
        claims client ids and publishes registry changes through store actions
        (see :mod:`wspipe_core.fleet`). ``None``: a self-contained proxy.
    :param wire: Parses and builds the frames of open connections: ``Wire(mask)``
        with the fastest masker there is (the driver passes a C one; pure Python if
        omitted).
    """

    def __init__(
        self,
        config: ProxyConfig | None = None,
        *,
        pm: pluggy.PluginManager | None = None,
        rng: random.Random | None = None,
        instance: str | None = None,
        wire: Wire | None = None,
    ) -> None:
        self.config = config = config or ProxyConfig()
        self.pm = pm if pm is not None else make_plugin_manager(config)
        self.hooks = Hooks(self.pm, config)
        self.hooks.configure()
        self.rng = rng if rng is not None else random.Random()
        self.pool = Pool(config)
        self.budget = MemoryBudget(config.memory_budget)
        self.stats = Stats()
        self.migrations = Migrations(config.migrate_rate)
        self._flow = flow = Flow(config)
        self._timers = Timers()
        self._links = Links()
        keepalive = Keepalive(config.ping_interval, config.ping_timeout, flow)
        relay = Relay(config, flow, self.budget, self.hooks, self.stats)
        self._handshakes = Handshakes(config, self.hooks, flow, self._timers, self.stats)
        self._sessions = Sessions(config, self.hooks, self.rng, self.pool, flow, relay,
                                  keepalive, self._timers, self._links, self.stats,
                                  wire)
        relay.evict = self._sessions.evict
        self._shutting_down = False
        self._handlers: dict[type, Callable[[Any, float], None]] = {
            ev.ClientConnected: self._on_client_connected,
            ev.ClientDataReceived: self._on_client_data,
            ev.ClientEOF: self._on_client_eof,
            ev.ClientDataSent: self._on_client_sent,
            ev.LinkConnected: self._on_link_connected,
            ev.LinkConnectFailed: self._on_link_connect_failed,
            ev.LinkDataReceived: self._on_link_data,
            ev.LinkEOF: self._on_link_eof,
            ev.LinkDataSent: self._on_link_sent,
            ev.ProbeResult: self._on_probe_result,
            **dict.fromkeys(FLEET_EVENTS, self._on_fleet),
            ev.BackendsResolved: self._on_backends_resolved,
        }
        #: Leases, store health and membership, with a store; ``None`` without one.
        self.fleet = Fleet.of(config, instance, self.stats) if instance is not None else None
        if self.fleet is not None:
            self.fleet.bind(self._sessions, self.pool, self._flow, self.migrations,
                            self._add, self._drain)
        #: Discovered backend entries (``dns+``/``srv+``), first resolved at once.
        self.discovery = Discovery(config.discovery_interval)
        for url in config.backends:
            if is_discovered(url):
                self.discovery.add(parse_target(url), float("-inf"))
            else:
                self.pool.add(url)
        self._timers.touch(self.discovery)
        #: Active health checks of the pool's backends (off unless configured).
        self.health = HealthChecks(config, self.pool)
        self._timers.touch(self.health)
        if self.fleet is not None:
            self._timers.touch(self.fleet)
        self._timers.flush()

    # ------------------------------------------------------------------ entry points

    def handle(self, event: ev.Event, now: float) -> list[Action]:
        """Feed one event observed at monotonic time ``now``; return the actions to run."""
        handler = self._handlers.get(type(event))
        if handler is None:
            raise UsageError(f"not an input event: {event!r}")
        handler(event, now)
        return self._finish(now)

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must next be called, or ``None`` if nothing is pending."""
        return self._timers.next()

    def handle_timer(self, now: float) -> list[Action]:
        """Fire every deadline ``<= now``; return the actions to run."""
        sessions = self._sessions
        for obj in self._timers.pop_due(now):
            if isinstance(obj, Pipe):
                if sessions.by_id.get(obj.id) is obj:
                    sessions.pipe_timer(obj, now)
            elif isinstance(obj, Link):
                if self._links.get(obj.id) is obj:
                    sessions.link_timer(obj, now)
            elif isinstance(obj, PendingClient):
                self._handshakes.tick(obj, now)
            elif obj is self.pool:
                self.pool.refresh(now)
            elif obj is self.migrations:
                self._migrate_due(now)
            elif obj is self.health:
                self._flow.out.extend(self.health.fire(now))
                self._timers.touch(self.health)
            elif isinstance(obj, Fleet):
                for upgrade in obj.fire(now, self._flow.out):
                    sessions.open(upgrade, now)
                self._timers.touch(obj)
            elif obj is self.discovery:
                self._flow.out.extend(self.discovery.fire(now))
                self._timers.touch(self.discovery)
        return self._finish(now)

    def _finish(self, now: float) -> list[Action]:
        flow = self._flow
        if flow.budget_freed:
            self._sessions.wake_budget_waiters(now)
        sessions, fleet = self._sessions, self.fleet
        if fleet is not None and fleet.handing:
            fleet.handovers(now)
        if sessions.parking:
            if fleet is not None:
                fleet.parked(sessions.parking, flow.out)
            sessions.parking.clear()
        if sessions.freed:
            if fleet is not None:
                fleet.released(sessions.freed, flow.out)
            sessions.freed.clear()
        if self.pool.changed or self._timers.touched:
            self._reschedule()
        out = flow.out
        flow.out = []
        return out

    def _reschedule(self) -> None:
        if self.pool.changed:
            # A cool-down ends on time even with no traffic, so the pool's state
            # (and readiness) is right without a pipe asking for a backend.
            self.pool.changed = False
            self._timers.touch(self.pool)
        self._timers.flush()

    # ------------------------------------------------------------------ pool operations

    def add_backend(self, url: str, *, weight: float = 1.0, now: float,
                    server_name: str | None = None) -> BackendInfo:
        """Register a backend (``AddConnectionToPool``); pipes waiting for one retry now.

        ``server_name`` is the name a discovered member is known by (TLS server name,
        ``Host``) when ``url`` names its address.

        :raises InvalidBackendURL: not a ``ws://``/``wss://`` URL, or a bad weight.
        :raises BackendNotAllowed: its host is not on ``backend_allow``.
        :raises BackendAlreadyRegistered: the URL is in the pool already.
        :raises StoreUnavailable: in a fleet, the store is unreachable (fail closed).
        """
        if self.fleet is not None:
            self.fleet.check()
        info = self._add(url, weight, now, server_name)
        if self.fleet is not None:
            self.fleet.publish(RegistryEntry(info.url, _Entry.UP, info.weight))
            self._timers.touch(self.fleet)
            self._reschedule()
        return info

    def _add(self, url: str, weight: float, now: float,
             server_name: str | None = None) -> BackendInfo:
        backend = self.pool.add(url, weight, server_name)
        self._sessions.retry_now(now)
        self._timers.touch(self.health)  # its first health check is due at once
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
        :raises StoreUnavailable: in a fleet, the store is unreachable (fail closed).
        """
        backend = self.pool.get(id_or_url)
        if self.fleet is not None:
            self.fleet.check()
            self.fleet.publish(RegistryEntry(backend.url, _Entry.DRAINING, backend.weight,
                                             migrate))
            self._timers.touch(self.fleet)
        self._drain(backend, migrate, now)
        return self._finish(now)

    def _drain(self, backend: Backend, migrate: bool, now: float) -> None:
        self.pool.drain(backend)
        self._timers.touch(self.health)  # draining backends are not probed
        for pipe in self._sessions.by_id.values():
            if pipe.racer is not None and pipe.racer.backend is backend:
                self._sessions.drop_racer(pipe)  # no new pipes there, even racing ones
        if migrate and backend.registered:
            ids = [p.id for p in self._sessions.by_id.values()
                   if p.link is not None and p.link.backend is backend]
            self.migrations.start(backend.id, ids, now)
            self._migrate_due(now)

    def migrate_pipe(self, pipe_id: str, *, now: float) -> list[Action]:
        """Move one pipe to another backend now (close its link with 1001, fail over)."""
        pipe = self._sessions.by_id.get(pipe_id)
        if pipe is not None:
            self._sessions.migrate(pipe, now)
        return self._finish(now)

    def _migrate_due(self, now: float) -> None:
        migrations = self.migrations
        while (turn := migrations.due(now)) is not None:
            backend_id, pipe_id = turn
            pipe = self._sessions.by_id.get(pipe_id)
            link = pipe.link if pipe is not None else None
            if (pipe is None or link is None or link.backend.id != backend_id
                    or pipe.state is PipeState.CLOSING):
                migrations.done(backend_id, Move.GONE, now)
            elif not any(b.state is BackendState.UP and b is not link.backend
                         for b in self.pool):
                # Never move a pipe to nowhere (it would buffer, then get 1013): it
                # stays on the draining backend until another one is up.
                migrations.done(backend_id, Move.WAIT, now)
            else:
                self._sessions.migrate(pipe, now)
                self.stats.pipes_migrated += 1
                migrations.done(backend_id, Move.MOVED, now)
        self._timers.touch(migrations)

    def reconfigure(self, config: ProxyConfig, *, now: float) -> tuple[Plan, list[Action]]:
        """Take a newly read configuration: change what can change live, leave the rest.

        The plan (:func:`wspipe_core.reconfigure.plan`) says what changes: new
        backend entries are registered (or discovered), removed ones drained with
        migrate, the live keys take their new values, plugins get
        ``wspipe_reconfigure`` (to re-read tokens and key files), and keys that need a
        restart keep their running values (the plan lists them).

        :raises ConfigError: The new configuration cannot be applied; nothing changed.
        """
        change = plan(self.config, config)
        self.config = cfg = change.config
        # The parts that read their settings where they use them (see LIVE_KEYS).
        for part in (self._handshakes, self._sessions, self.pool, self.hooks):
            part._config = cfg
        self.health.config = cfg
        self.migrations.rate = cfg.migrate_rate
        self.budget.limit = cfg.memory_budget
        self.discovery.interval = cfg.discovery_interval
        self._timers.touch(self.health)
        self._timers.touch(self.discovery)
        for url in change.add_backends:
            with contextlib.suppress(BackendAlreadyRegistered):  # registered at runtime
                info = self._add(url, 1.0, now)
                if self.fleet is not None:  # like the start-up config: seeds the registry
                    self.fleet.seed(RegistryEntry(info.url, _Entry.UP, info.weight))
                    self._timers.touch(self.fleet)
        drain = list(change.remove_backends)
        for entry in change.add_discovered:
            self.discovery.add(parse_target(entry), now)
        for entry in change.remove_discovered:
            drain += self.discovery.remove(entry)
        for url in drain:
            self._drain_member(url, now)
        self.hooks.reconfigure(cfg)  # every time: plugins re-read their key files
        return change, self._finish(now)

    def _drain_member(self, url: str, now: float) -> None:
        """Drain ``url`` with migrate if it is still in the pool."""
        # Gone already, when drained by hand or removed after max_errors.
        with contextlib.suppress(UnknownBackend):
            # (Local: in a fleet, every instance reloads or resolves for itself.)
            self._drain(self.pool.get(url), True, now)

    def shutdown(self, now: float) -> list[Action]:
        """Stop accepting; close every client with 1001 and every link."""
        self._shutting_down = True
        if self.fleet is not None:
            self.fleet.shutdown(self._flow.out)
        self.discovery.shutdown()
        self._timers.touch(self.discovery)
        self._flow.out.extend(self.health.shutdown())
        self._timers.touch(self.health)
        self._handshakes.shutdown()
        self._sessions.shutdown(now)
        return self._finish(now)

    # ------------------------------------------------------------------ snapshots

    @property
    def idle(self) -> bool:
        """No client connection and no link is left (shutdown is complete)."""
        return not (len(self._handshakes) or self._sessions.by_id or len(self._links))

    @property
    def connections(self) -> int:
        """Client connections, handshaking or open."""
        return len(self._handshakes) + len(self._sessions.by_conn)

    def backends(self) -> list[BackendInfo]:
        """Snapshots of the pool, in registration order."""
        return [b.info() for b in self.pool]

    def pipes(self) -> list[PipeInfo]:
        """Snapshots of every pipe."""
        return [p.info() for p in self._sessions.by_id.values()]

    def pipe_of(self, conn: ev.ConnId) -> PipeInfo | None:
        """The snapshot of the pipe of client connection ``conn``, if it has one."""
        pipe = self._sessions.by_conn.get(conn)
        return pipe.info() if pipe is not None else None

    def backend_health(self) -> list[BackendHealth]:
        """The health of every backend: ejection end, last and next health check."""
        return self.health.snapshot()

    def migrations_under_way(self) -> list[MigrationInfo]:
        """The drains with migrate under way, one per backend."""
        return self.migrations.snapshot()

    # ------------------------------------------------------------------ routing

    def _on_client_connected(self, event: ev.ClientConnected, now: float) -> None:
        if event.conn in self._handshakes or event.conn in self._sessions.by_conn:
            raise UsageError(f"client connection {event.conn} is already known")
        self._handshakes.connected(event, now, self._shutting_down)

    def _on_client_data(self, event: ev.ClientDataReceived, now: float) -> None:
        sessions = self._sessions
        pipe = sessions.by_conn.get(event.conn)
        if pipe is not None:
            sessions.client_data(pipe, event.data, now)
            return
        client = self._handshakes.get(event.conn)
        if client is None:
            if self.fleet is not None:
                self.fleet.early(event.conn, event.data, self._flow.out)
            return
        received = self._handshakes.receive(client, event.data)
        if received is None:
            return
        fleet = self.fleet
        upgrade = self._handshakes.admit(
            client, *received, pipes=len(sessions.by_id) + (len(fleet) if fleet else 0),
            shutting_down=self._shutting_down,
            claim=lambda client_id: (
                (Claim.BUSY, None) if fleet is not None and fleet.leaving(client_id)
                else sessions.claim(client_id, now)))
        if upgrade is None:
            return
        if fleet is not None and not upgrade.resumes:
            fleet.claim(upgrade, now, self._flow.out)  # opened when the store answers
            self._timers.touch(fleet)
        else:
            sessions.open(upgrade, now)

    def _on_client_eof(self, event: ev.ClientEOF, now: float) -> None:
        client = self._handshakes.get(event.conn)
        if client is not None:
            self._handshakes.went_away(client)
            return
        pipe = self._sessions.by_conn.get(event.conn)
        if pipe is not None:
            self._sessions.client_eof(pipe, now)
        elif self.fleet is not None:
            self.fleet.gone(event.conn, self._flow.out)

    def _on_client_sent(self, event: ev.ClientDataSent, now: float) -> None:
        pipe = self._sessions.by_conn.get(event.conn)
        if pipe is not None:
            client = pipe.client
            client.pending -= event.nbytes
            if client.congested:
                self._flow.written(client)

    def _on_link_connected(self, event: ev.LinkConnected, now: float) -> None:
        link = self._links.get(event.link)
        if link is not None and link.state is LinkState.DIALING:
            self._sessions.link_connected(link)

    def _on_link_connect_failed(self, event: ev.LinkConnectFailed, now: float) -> None:
        link = self._links.get(event.link)
        if link is not None:
            outcome = link.connect_failed(event.error)
            if outcome is not None:
                self._sessions.outcome(link, outcome, now)

    def _on_link_data(self, event: ev.LinkDataReceived, now: float) -> None:
        link = self._links.by_id.get(event.link)
        if link is not None:
            self._sessions.link_data(link, event.data, now)

    def _on_link_eof(self, event: ev.LinkEOF, now: float) -> None:
        link = self._links.get(event.link)
        if link is not None:
            self._sessions.outcome(link, link.eof(event.error), now)

    def _on_link_sent(self, event: ev.LinkDataSent, now: float) -> None:
        link = self._links.by_id.get(event.link)
        if link is not None:
            link.pending -= event.nbytes
            if link.congested:
                self._flow.written(link)

    def _on_backends_resolved(self, event: ev.BackendsResolved, now: float) -> None:
        answer = self.discovery.resolved(event, now)
        self._timers.touch(self.discovery)
        if answer is None:
            return
        self.stats.resolutions["failed" if answer.failed else "ok"] += 1
        for url in answer.add:
            try:
                # (Local: in a fleet, each instance resolves for itself.)
                self._add(url, 1.0, now, answer.name)
            except BackendAlreadyRegistered:
                continue  # still draining from an earlier answer: the next one retries
            except BackendNotAllowed as exc:
                log.warning("discovery: %s; not added", exc)
                continue
            self.discovery.joined(answer.entry, url)
        for url in answer.drain:
            self._drain_member(url, now)

    def _on_fleet(self, event: ev.Event, now: float) -> None:
        if self.fleet is not None:
            self.fleet.on_event(event, now, self.config.migrate_rate)
            self._timers.touch(self.fleet)

    def _on_probe_result(self, event: ev.ProbeResult, now: float) -> None:
        self._flow.out.extend(self.health.result(event, now))
        self._timers.touch(self.health)
