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
from ..fleet import (
    ClaimResult,
    RegistryEntry,
    RegistrySnapshot,
    StoreClaim,
    StoreClaimed,
    StorePublish,
    StoreRelease,
    StoreRenew,
    StoreSeed,
)


@dataclass(eq=False)
class MemoryStore:
    """Leases (client id → holder, expiry) and the registry (URL → entry, with a version)."""

    leases: dict[str, tuple[str, float]] = field(default_factory=dict)
    registry: dict[str, RegistryEntry] = field(default_factory=dict)
    version: int = 0
    #: Answer nothing while set (a store that is down or a black hole).
    down: bool = False

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
            case StoreClaim(client_id, holder, ttl):
                current = self.holder(client_id, now)
                if current is not None and current != holder:
                    return [StoreClaimed(client_id, ClaimResult.TAKEN, current)]
                self.leases[client_id] = (holder, now + ttl)
                return [StoreClaimed(client_id, ClaimResult.OK)]
            case StoreRenew(client_ids, holder, ttl):
                for client_id in client_ids:
                    if self.holder(client_id, now) in (None, holder):
                        self.leases[client_id] = (holder, now + ttl)
            case StoreRelease(client_id, holder):
                if self.holder(client_id, now) == holder:
                    del self.leases[client_id]
            case StorePublish(entry):
                self.registry[entry.url] = entry
                self.version += 1
            case StoreSeed(entries):
                for entry in entries:
                    if entry.url not in self.registry:
                        self.registry[entry.url] = entry
                        self.version += 1
        return []
