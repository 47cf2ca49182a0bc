"""An in-memory store shared by several :class:`~wspipe_core.testing.Harness` instances.

It follows the lease and registry rules the Redis store implements
(``wspipe_anyio/store/redis.py``), on the harnesses' explicit clock, so a fleet of
cores can be tested without I/O: leases expire ``ttl`` after their last write, a
release deletes only the holder's own lease, a renewal writes back a lease the store
lost. ``down`` makes it answer nothing (claims time out in the core); ``wipe()`` is a
store restart without persistence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..actions import Action
from ..events import Event
from ..store import (
    ClaimResult,
    HandoverArrived,
    HandoverRequested,
    RegistryEntry,
    RegistrySnapshot,
    StoreClaim,
    StoreClaimed,
    StoreHandoff,
    StoreHandover,
    StorePark,
    StorePublish,
    StoreRelease,
    StoreRenew,
    StoreSeed,
    StoreUnpark,
)


@dataclass(eq=False)
class MemoryStore:
    """Leases (client id → holder, expiry) and the registry (URL → entry, with a version)."""

    leases: dict[str, tuple[str, float]] = field(default_factory=dict)
    registry: dict[str, RegistryEntry] = field(default_factory=dict)
    version: int = 0
    #: Answer nothing while set (a store that is down or a black hole).
    down: bool = False
    #: Parked sessions: client id → (holder, principal, expiry).
    parked: dict[str, tuple[str, str | None, float]] = field(default_factory=dict)
    #: Handover requests waiting for their instance, and session exports for theirs.
    inbox: dict[str, list[Event]] = field(default_factory=dict)
    waiting: dict[str, set[str]] = field(default_factory=dict)
    exports: dict[str, bytes] = field(default_factory=dict)

    def poll(self, instance: str) -> list[Event]:
        """What the driver's poll would deliver to ``instance`` now (handovers)."""
        if self.down:
            return []
        events = self.inbox.pop(instance, [])
        for client_id in sorted(self.waiting.get(instance, ())):
            if client_id in self.exports:
                self.waiting[instance].discard(client_id)
                events.append(HandoverArrived(client_id, self.exports.pop(client_id)))
        return events

    def _parked(self, client_id: str, now: float) -> tuple[str, str | None] | None:
        entry = self.parked.get(client_id)
        return (entry[0], entry[1]) if entry is not None and entry[2] > now else None

    def holder(self, client_id: str, now: float) -> str | None:
        """Who holds a live lease on ``client_id`` at ``now``."""
        lease = self.leases.get(client_id)
        return lease[0] if lease is not None and lease[1] > now else None

    def snapshot(self) -> RegistrySnapshot:
        """The registry as the driver would deliver it."""
        return RegistrySnapshot(self.version, tuple(self.registry.values()))

    def wipe(self) -> None:
        """Lose everything (a restart without persistence)."""
        self.leases.clear()
        self.registry.clear()
        self.version = 0

    def execute(self, action: Action, now: float) -> list[Event]:
        """Carry out one store action at ``now``; the events to feed back to its core."""
        if self.down:
            return []
        match action:
            case StoreClaim(client_id, holder, ttl, steal):
                current = self.holder(client_id, now)
                parked = self._parked(client_id, now)
                if current is not None and current != holder:
                    if parked is None or parked[0] != current:
                        return [StoreClaimed(client_id, ClaimResult.TAKEN, current)]
                    if not steal:
                        return [StoreClaimed(client_id, ClaimResult.PARKED, current, parked[1])]
                    self.parked.pop(client_id, None)
                self.leases[client_id] = (holder, now + ttl)
                return [StoreClaimed(client_id, ClaimResult.OK)]
            case StorePark(client_id, holder, principal, ttl):
                if self.holder(client_id, now) == holder:
                    self.parked[client_id] = (holder, principal, now + ttl)
            case StoreUnpark(client_id, holder):
                if (self._parked(client_id, now) or ("",))[0] == holder:
                    del self.parked[client_id]
            case StoreHandover(client_id, source, target):
                self.inbox.setdefault(source, []).append(HandoverRequested(client_id, target))
                self.waiting.setdefault(target, set()).add(client_id)
            case StoreHandoff(client_id, holder, target, blob, ttl):
                self.exports[client_id] = blob
                if self.holder(client_id, now) == holder:
                    self.leases[client_id] = (target, now + ttl)
                self.parked.pop(client_id, None)
            case StoreRenew(client_ids, holder, ttl):
                for client_id in client_ids:
                    if self.holder(client_id, now) in (None, holder):
                        self.leases[client_id] = (holder, now + ttl)
            case StoreRelease(client_id, holder):
                if self.holder(client_id, now) == holder:
                    del self.leases[client_id]
                    self.parked.pop(client_id, None)
            case StorePublish(entry):
                self.registry[entry.url] = entry
                self.version += 1
            case StoreSeed(entries):
                for entry in entries:
                    if entry.url not in self.registry:
                        self.registry[entry.url] = entry
                        self.version += 1
        return []
