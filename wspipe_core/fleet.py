"""The fleet: what this instance asks of the shared store, and what it does with the answers.

With a store (``Proxy(..., instance=ID)``), several instances share client-id leases
and the pool registry. The store is I/O, so it is the driver's: the core asks with an
action and learns the answer from an event, never waiting on it.

* **Leases.** A new session (not a resume of one this instance holds) first claims its
  client id: :class:`StoreClaim` → :class:`StoreClaimed`. ``OK`` opens the session,
  ``TAKEN`` (another instance holds it) refuses with 409, ``UNAVAILABLE`` (store down,
  slow or full) *fails open*: the session opens, with a log line and a count, and the
  next renewal writes the lease. While the claim is out the client is not read. The
  answer must come within ``store_timeout`` or the claim fails open the same way. Every
  ``lease_ttl / 3`` the leases of the live (and parked) sessions are renewed in batches
  (:class:`StoreRenew`; a lease the store lost is written again, which is how leases come
  back after a store restart); a session that ends releases its lease
  (:class:`StoreRelease`, compare-and-delete). A killed instance renews nothing, so its
  leases expire ``lease_ttl`` after its last renewal at most.
* **Registry.** Registering, draining and removing a backend through the API is
  published (:class:`StorePublish`) and fails *closed* while the store is down
  (:class:`StoreUnavailable`, 503 at the API). The driver delivers the whole registry as
  a :class:`RegistrySnapshot` when it changed or the store came back; :meth:`Fleet.plan`
  diffs it against the pool: an ``up`` entry not in the pool is added, a ``draining``
  entry drains it (migrating if it says so). A backend missing from the registry is left
  alone (a wiped store never drains the fleet); when the store comes back the instance
  re-seeds it with its pool, only where an entry is missing (:class:`StoreSeed`).
* **Members.** :class:`FleetMembers` says how many instances are alive; a drain's
  ``migrate_rate`` is for the fleet, so each instance moves ``migrate_rate / members``
  pipes a second.
* **Handovers.** A parked session's lease is marked parked (:class:`StorePark`); a
  claim that finds it ``PARKED`` elsewhere asks for it (:class:`StoreHandover`) and waits
  ``handover_timeout``, then takes the lease and starts a new session; the holder
  hands it over (:mod:`wspipe_core.handover`, :class:`StoreHandoff`).

The actions and events are defined in :mod:`wspipe_core.store`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .actions import Action, CloseClient, PauseClient, ResumeClient, SendToClient
from .config import ProxyConfig
from .errors import BackendError
from .events import ConnId, Event
from .handover import SessionState, restore
from .handshake import Upgrade, http_error
from .info import BackendState
from .pool import Backend, Pool
from .stats import Stats
from .store import (
    ClaimResult,
    EntryState,
    FleetMembers,
    HandoverArrived,
    HandoverRequested,
    RegistryEntry,
    RegistrySnapshot,
    StoreClaim,
    StoreClaimed,
    StoreHandoff,
    StoreHandover,
    StoreHealth,
    StorePark,
    StorePublish,
    StoreRelease,
    StoreRenew,
    StoreSeed,
    StoreUnavailable,
    StoreUnpark,
)

if TYPE_CHECKING:
    from .flow import Flow
    from .migration import Migrations
    from .session import Sessions


log = logging.getLogger("wspipe")

#: Leases renewed per :class:`StoreRenew` action (one store round trip each).
RENEW_BATCH = 500
#: Bytes a client may send while its claim is out (one read), before it is refused.
EARLY_LIMIT = 64 * 1024


# ---------------------------------------------------------------- the decisions


@dataclass(eq=False)
class _Claim:
    upgrade: Upgrade
    deadline: float
    #: Waiting for a handover from this instance (``PARKED``), or stealing after one.
    handover_from: str | None = None
    stealing: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """What a registry snapshot asks of this instance's pool."""

    #: (url, weight) to register.
    add: tuple[tuple[str, float], ...] = ()
    #: (backend id, migrate) to drain.
    drain: tuple[tuple[str, bool], ...] = ()


@dataclass(eq=False)
class Fleet:
    """Leases, claims in flight, store health and membership of one instance."""

    instance: str
    lease_ttl: float
    store_timeout: float
    stats: Stats
    #: How long a handover may take before this instance starts a new session instead.
    handover_timeout: float = 8.0
    #: How long a parked session stays resumable (``resume_window``).
    resume_window: float = 30.0
    #: ``buffer_limit``: what an arriving session export may hold in each direction.
    buffer_limit: int = 5 * 1024 * 1024
    #: Whether the store answered last time the driver looked (it starts unknown: down).
    store_up: bool = False
    #: Live instances, this one included.
    members: int = 1
    #: Highest registry version applied.
    version: int = -1
    #: Client ids this instance holds a lease on.
    leases: set[str] = field(default_factory=set)
    _claims: dict[ConnId, _Claim] = field(default_factory=dict)
    _by_client_id: dict[str, ConnId] = field(default_factory=dict)
    _renew_at: float | None = None
    #: Parked sessions being handed over (their link closing), to which instance.
    handing: dict[Any, str] = field(default_factory=dict)
    #: Actions waiting for the next ``_finish`` of the core (from methods that return none).
    queued: list[Action] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._claims)

    def next_deadline(self) -> float | None:
        times = [c.deadline for c in self._claims.values()]
        if self.queued:
            times.append(float("-inf"))
        if self._renew_at is not None:
            times.append(self._renew_at)
        return min(times) if times else None

    # ------------------------------------------------------------ leases

    def claim(self, up: Upgrade, now: float, out: list[Action]) -> None:
        """Ask the store for the lease of ``up``'s client id; the client waits unread."""
        if up.client_id in self._by_client_id:
            self._refuse(up, f"client id {up.client_id} is already connecting", out)
            return
        self._claims[up.conn] = _Claim(up, now + self.store_timeout)
        self._by_client_id[up.client_id] = up.conn
        out.append(PauseClient(up.conn))
        out.append(StoreClaim(up.client_id, self.instance, self.lease_ttl))

    def early(self, conn: ConnId, data: bytes, out: list[Action]) -> bool:
        """Bytes from a client whose claim is out; ``False``: not such a client."""
        claim = self._claims.get(conn)
        if claim is None:
            return False
        up = claim.upgrade
        if len(up.early) + len(data) > EARLY_LIMIT:
            self._drop(conn)
            self._refuse(up, "too much data before the upgrade was answered", out, 400)
            return True
        claim.upgrade = replace(up, early=up.early + data)
        return True

    def gone(self, conn: ConnId, out: list[Action]) -> bool:
        """The client of a claim in flight hung up; ``False``: not such a client."""
        claim = self._claims.get(conn)
        if claim is None:
            return False
        self._drop(conn)
        out.append(CloseClient(conn))
        log.info("client conn %s went away while its client id was being claimed", conn)
        return True

    def claimed(self, event: StoreClaimed, now: float, out: list[Action]) -> Upgrade | None:
        """The store answered: the upgrade to open, or ``None`` (refused, or gone)."""
        conn = self._by_client_id.get(event.client_id)
        claim = self._claims.get(conn) if conn is not None else None
        if conn is None or claim is None:
            if event.result is ClaimResult.OK:  # its client left meanwhile
                out.append(StoreRelease(event.client_id, self.instance))
            return None
        self._drop(conn)
        up = claim.upgrade
        if event.result is ClaimResult.PARKED and not claim.stealing:
            if event.principal is not None and up.principal != event.principal:
                self._refuse(up, f"client id {up.client_id} belongs to another principal: "
                             "its session cannot be resumed by this one", out, 403)
                return None
            self._claims[conn] = claim
            self._by_client_id[up.client_id] = conn
            claim.handover_from = event.holder
            claim.deadline = now + self.handover_timeout
            log.info("client id %s: its session is parked on instance %s; asking for it",
                     up.client_id, event.holder)
            out.append(StoreHandover(up.client_id, event.holder, self.instance))
            return None
        if event.result in (ClaimResult.TAKEN, ClaimResult.PARKED):
            self.stats.fleet_claims_taken += 1
            self._refuse(up, f"client id {up.client_id} is already connected "
                         f"(on instance {event.holder or 'another instance'})", out)
            return None
        if event.result is ClaimResult.UNAVAILABLE:
            self._fail_open(up, "the store did not answer")
        return self._open(up, now, out)

    def _fail_open(self, up: Upgrade, why: str) -> None:
        self.stats.fleet_claims_failed_open += 1
        log.warning("client id %s: %s; accepting it without a fleet-wide lease (fail open)",
                    up.client_id, why)

    def _open(self, up: Upgrade, now: float, out: list[Action]) -> Upgrade:
        self.leases.add(up.client_id)
        if self._renew_at is None:
            self._renew_at = now + self.lease_ttl / 3
        out.append(ResumeClient(up.conn))
        return up

    def arrived(self, event: HandoverArrived, now: float,
                out: list[Action]) -> tuple[Upgrade, SessionState] | Upgrade | None:
        """A session export arrived: (upgrade, state) to adopt; an upgrade alone to open
        as a new session (the export was garbage); ``None`` (nobody waits for it)."""
        conn = self._by_client_id.get(event.client_id)
        claim = self._claims.get(conn) if conn is not None else None
        if conn is None or claim is None or claim.handover_from is None:
            log.warning("client id %s: its session arrived after its client left: the "
                        "session ends", event.client_id)
            self.stats.fleet_handovers_failed += 1
            out.append(StoreRelease(event.client_id, self.instance))
            return None
        self._drop(conn)
        up = claim.upgrade
        self.leases.add(up.client_id)  # (the handoff moved it to this instance)
        if self._renew_at is None:
            self._renew_at = now + self.lease_ttl / 3
        out.append(ResumeClient(up.conn))
        try:
            state = restore(event.blob, up.client_id, self.buffer_limit)
        except ValueError as exc:
            self.stats.fleet_handovers_failed += 1
            log.warning("client id %s: the session export from instance %s is garbage (%s): "
                        "starting a new session", up.client_id, claim.handover_from, exc)
            return up
        self.stats.fleet_handovers_in += 1
        return up, state

    def leaving(self, client_id: str) -> bool:
        """Whether the session of ``client_id`` is being handed to another instance (a
        connection here meanwhile gets 409, as for a live session)."""
        return bool(self.handing) and any(p.client_id == client_id for p in self.handing)

    def requested(self, pipe: Any, target: str) -> None:
        """``pipe`` (parked here) is being handed over to ``target``."""
        self.handing[pipe] = target

    def handed(self, pipe: Any, client_id: str, target: str, blob: bytes | None,
               out: list[Action]) -> None:
        """``pipe``'s link has closed and its session was exported (``None``: it ended)."""
        del self.handing[pipe]
        if blob is not None:
            self.stats.fleet_handovers_out += 1
            out.append(StoreHandoff(client_id, self.instance, target, blob, self.lease_ttl))

    def parked(self, pipes: list[Any], out: list[Action]) -> None:
        """These sessions were parked or resumed: tell the store which may move."""
        for pipe in pipes:
            if pipe.client_id not in self.leases:
                continue
            if pipe.parked_until is not None:
                out.append(StorePark(pipe.client_id, self.instance, pipe.principal,
                                     self.resume_window))
            else:
                out.append(StoreUnpark(pipe.client_id, self.instance))

    def released(self, client_ids: list[str], out: list[Action]) -> None:
        """These sessions ended: give their leases back."""
        for client_id in client_ids:
            if client_id in self.leases:
                self.leases.discard(client_id)
                out.append(StoreRelease(client_id, self.instance))

    def fire(self, now: float, out: list[Action]) -> list[Upgrade]:
        """Renew leases when due; claims past ``store_timeout`` fail open (to be opened)."""
        out.extend(self.queued)
        self.queued.clear()
        opened = []
        for conn, claim in list(self._claims.items()):
            if now >= claim.deadline and claim.handover_from is not None:
                log.warning("client id %s: instance %s did not hand its session over within "
                            "%gs: starting a new session", claim.upgrade.client_id,
                            claim.handover_from, self.handover_timeout)
                self.stats.fleet_handovers_failed += 1
                claim.handover_from = None
                claim.stealing = True
                claim.deadline = now + self.store_timeout
                out.append(StoreClaim(claim.upgrade.client_id, self.instance, self.lease_ttl,
                                      steal=True))
            elif now >= claim.deadline:
                self._drop(conn)
                self._fail_open(claim.upgrade, f"no answer from the store within "
                                f"{self.store_timeout:g}s")
                opened.append(self._open(claim.upgrade, now, out))
        if self._renew_at is not None and now >= self._renew_at:
            self._renew(out)
            self._renew_at = now + self.lease_ttl / 3 if self.leases else None
        return opened

    def _renew(self, out: list[Action]) -> None:
        ids = sorted(self.leases)
        for start in range(0, len(ids), RENEW_BATCH):
            out.append(StoreRenew(tuple(ids[start:start + RENEW_BATCH]), self.instance,
                                  self.lease_ttl))

    def shutdown(self, out: list[Action]) -> None:
        """Refuse every client still waiting for its claim (503)."""
        for conn, claim in list(self._claims.items()):
            self._drop(conn)
            self._refuse(claim.upgrade, "proxy is shutting down", out, 503)

    def _drop(self, conn: ConnId) -> None:
        claim = self._claims.pop(conn)
        if self._by_client_id.get(claim.upgrade.client_id) == conn:
            del self._by_client_id[claim.upgrade.client_id]

    def _refuse(self, up: Upgrade, reason: str, out: list[Action], status: int = 409) -> None:
        log.warning("client conn %s from %s refused with %d: %s", up.conn, up.peer, status,
                    reason)
        self.stats.clients_rejected[status] += 1
        out.append(SendToClient(up.conn, http_error(status, reason)))
        out.append(CloseClient(up.conn))

    # ------------------------------------------------------------ the store's health

    def health(self, event: StoreHealth, pool: Pool, now: float) -> None:
        """The store came back (reseed the registry, renew every lease now) or went away."""
        if event.up == self.store_up:
            return
        self.store_up = event.up
        if not event.up:
            self.stats.fleet_store_outages += 1
            log.warning("store unreachable: live pipes carry on; new client ids are accepted "
                        "without a lease, registry changes are refused (503)")
            return
        log.info("store reachable: re-seeding the registry and renewing %d lease(s)",
                 len(self.leases))
        self.queued.append(StoreSeed(tuple(self.entries(pool))))
        if self.leases:
            self._renew_at = now

    def check(self) -> None:
        """Raise :class:`StoreUnavailable` unless a registry change can be published now."""
        if not self.store_up:
            raise StoreUnavailable("the store is unreachable: registry changes are refused "
                                   "until it is back")

    # ------------------------------------------------------------ the registry

    @staticmethod
    def entries(pool: Pool) -> list[RegistryEntry]:
        """The registry entries this instance's pool stands for."""
        out = []
        for backend in pool:
            if not backend.registered:
                continue
            state = EntryState.DRAINING if backend.state is BackendState.DRAINING else EntryState.UP
            out.append(RegistryEntry(backend.url, state, backend.weight))
        return out

    def seed(self, entry: RegistryEntry) -> None:
        """Queue writing ``entry`` into the registry unless it has that URL already."""
        self.queued.append(StoreSeed((entry,)))

    def publish(self, entry: RegistryEntry) -> None:
        """Queue a registry change made on this instance."""
        self.queued.append(StorePublish(entry))

    def plan(self, snapshot: RegistrySnapshot, pool: Pool) -> Plan:
        """What the pool must do to match ``snapshot`` (idempotent: a repeat plans nothing)."""
        self.version = max(self.version, snapshot.version)
        mine = {b.url: b for b in pool if b.registered}
        add: list[tuple[str, float]] = []
        drain: list[tuple[str, bool]] = []
        for entry in snapshot.entries:
            backend = mine.get(entry.url)
            if entry.state is EntryState.UP:
                if backend is None:
                    add.append((entry.url, entry.weight))
            elif backend is not None and backend.state is not BackendState.DRAINING:
                drain.append((backend.id, entry.migrate))
        return Plan(tuple(add), tuple(drain))

    def members_changed(self, event: FleetMembers) -> float:
        """Record the fleet's size; the share of ``migrate_rate`` this instance may use."""
        self.members = max(1, event.instances)
        return 1.0 / self.members

    # ------------------------------------------------------------ routing (from the Proxy)

    @classmethod
    def of(cls, config: ProxyConfig, instance: str, stats: Stats) -> Fleet:
        """The fleet state of ``instance`` with ``config``'s timings and limits."""
        return cls(instance, config.lease_ttl, config.store_timeout, stats,
                   config.close_timeout + 2 * config.store_timeout + 1.0,
                   config.resume_window, config.buffer_limit)

    def bind(self, sessions: Sessions, pool: Pool, flow: Flow, migrations: Migrations,
             add: Callable[[str, float, float], Any],
             drain: Callable[[Backend, bool, float], None]) -> None:
        """The parts of the core the store's answers act on."""
        self._sessions, self._pool, self._flow, self._migrations = (
            sessions, pool, flow, migrations)
        self._add, self._drain_backend = add, drain

    def on_event(self, event: Event, now: float, migrate_rate: float) -> None:
        """One of :data:`FLEET_EVENTS`, routed here by the proxy."""
        sessions, out = self._sessions, self._flow.out
        if isinstance(event, StoreClaimed):
            if (upgrade := self.claimed(event, now, out)) is not None:
                sessions.open(upgrade, now)
        elif isinstance(event, StoreHealth):
            self.health(event, self._pool, now)
        elif isinstance(event, RegistrySnapshot):
            self._apply(self.plan(event, self._pool), now)
        elif isinstance(event, FleetMembers):
            self._migrations.rate = migrate_rate * self.members_changed(event)
        elif isinstance(event, HandoverRequested):
            pipe = sessions.hand_over(event.client_id, event.target, now)
            if pipe is None:
                log.info("instance %s asked for the session of client id %s: not parked "
                         "here", event.target, event.client_id)
            else:
                self.requested(pipe, event.target)
        elif isinstance(event, HandoverArrived):
            arrived = self.arrived(event, now, out)
            if isinstance(arrived, tuple):
                sessions.adopt(*arrived, now)
            elif arrived is not None:
                sessions.open(arrived, now)

    def _apply(self, plan: Plan, now: float) -> None:
        for url, weight in plan.add:
            try:
                info = self._add(url, weight, now)
            except BackendError as exc:
                self.stats.fleet_registry_rejected += 1
                log.warning("registry entry %r ignored: %s", url, exc)
            else:
                log.info("backend %s (%s) registered through the fleet registry", info.id, url)
        for backend_id, migrate in plan.drain:
            log.info("backend %s drained through the fleet registry%s", backend_id,
                     " (migrating its pipes)" if migrate else "")
            self._drain_backend(self._pool.get(backend_id), migrate, now)

    def handovers(self, now: float) -> None:
        """Export the sessions being handed over whose links have closed."""
        sessions = self._sessions
        for pipe, target in list(self.handing.items()):
            if sessions.link_closed(pipe):
                self.handed(pipe, pipe.client_id, target, sessions.handed(pipe, target, now),
                            self._flow.out)


#: The events :meth:`Fleet.on_event` takes.
FLEET_EVENTS = (StoreClaimed, StoreHealth, RegistrySnapshot, FleetMembers, HandoverRequested,
                HandoverArrived)
