"""The words between the core and the fleet's store: actions, events, registry entries.

The core emits :class:`StoreAction` subclasses and is fed the events below; the driver
executes them against the store (``wspipe_anyio/store/``). What each means is decided
in :mod:`wspipe_core.fleet`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .actions import Action
from .events import Event


class StoreUnavailable(Exception):
    """A registry change was asked for while the store is unreachable (fail closed: 503)."""


class ClaimResult(enum.Enum):
    """The store's answer to a :class:`StoreClaim`."""

    #: The lease is this instance's (new, or already ours).
    OK = "ok"
    #: Another instance holds a live lease on the client id: 409.
    TAKEN = "taken"
    #: The store did not answer in time, is down, or the request queue is full.
    UNAVAILABLE = "unavailable"
    #: Another instance holds it for a parked session: ask it to hand the session over.
    PARKED = "parked"


class EntryState(enum.Enum):
    """What the registry says about a backend URL."""

    #: Registered: every instance has it in its pool.
    UP = "up"
    #: Drained or removed: no new pipes anywhere; it leaves each pool once empty.
    DRAINING = "draining"


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One backend of the fleet-wide registry."""

    url: str
    state: EntryState
    weight: float = 1.0
    #: With ``DRAINING``: move its pipes to other backends (at the fleet's rate).
    migrate: bool = False


# ---------------------------------------------------------------- actions


class StoreAction(Action):
    """Base of the actions the driver's store executes (in order, off the relay's path)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class StoreClaim(StoreAction):
    """Take the lease of ``client_id`` for ``holder`` unless another holder has it.

    Report :class:`StoreClaimed`. (Redis: ``SET key holder NX PX lease_ttl``, or
    ``PEXPIRE`` when the value is already ``holder``.)
    """

    client_id: str
    holder: str
    ttl: float
    #: Take it even from a parked session's holder (a handover that did not come).
    steal: bool = False


@dataclass(frozen=True, slots=True)
class StoreRenew(StoreAction):
    """Extend these leases by ``ttl``; write any that the store lost. No answer is needed."""

    client_ids: tuple[str, ...]
    holder: str
    ttl: float


@dataclass(frozen=True, slots=True)
class StoreRelease(StoreAction):
    """Delete the lease of ``client_id`` if ``holder`` still holds it."""

    client_id: str
    holder: str


@dataclass(frozen=True, slots=True)
class StorePark(StoreAction):
    """Say that ``holder``'s session of ``client_id`` is parked (resumable elsewhere)
    for ``ttl`` seconds, and whose it is (``principal``)."""

    client_id: str
    holder: str
    principal: str | None
    ttl: float


@dataclass(frozen=True, slots=True)
class StoreUnpark(StoreAction):
    """The session of ``client_id`` is no longer parked (its client came back here)."""

    client_id: str
    holder: str


@dataclass(frozen=True, slots=True)
class StoreHandover(StoreAction):
    """Ask instance ``source`` to hand its parked session of ``client_id`` to ``target``;
    report :class:`HandoverArrived` when the session's export is there."""

    client_id: str
    source: str
    target: str


@dataclass(frozen=True, slots=True)
class StoreHandoff(StoreAction):
    """Write the export of the session of ``client_id`` for ``target`` and move the lease
    from ``holder`` to it."""

    client_id: str
    holder: str
    target: str
    blob: bytes
    ttl: float


@dataclass(frozen=True, slots=True)
class StorePublish(StoreAction):
    """Write ``entry`` into the registry and tell every instance (it changed)."""

    entry: RegistryEntry


@dataclass(frozen=True, slots=True)
class StoreSeed(StoreAction):
    """Write those of ``entries`` whose URL the registry does not have yet."""

    entries: tuple[RegistryEntry, ...]


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class StoreClaimed(Event):
    """The store answered the :class:`StoreClaim` of ``client_id``."""

    client_id: str
    result: ClaimResult
    #: Who holds it, when ``TAKEN`` or ``PARKED``.
    holder: str = ""
    #: With ``PARKED``: the principal of the parked session, if it has one.
    principal: str | None = None


@dataclass(frozen=True, slots=True)
class HandoverRequested(Event):
    """Instance ``target`` asks for this instance's parked session of ``client_id``."""

    client_id: str
    target: str


@dataclass(frozen=True, slots=True)
class HandoverArrived(Event):
    """The export of the session of ``client_id`` that this instance asked for."""

    client_id: str
    blob: bytes


@dataclass(frozen=True, slots=True)
class StoreHealth(Event):
    """The store became reachable (``up``) or stopped answering."""

    up: bool


@dataclass(frozen=True, slots=True)
class RegistrySnapshot(Event):
    """The whole registry, validated by the driver; ``version`` grows with each change."""

    version: int
    entries: tuple[RegistryEntry, ...]


@dataclass(frozen=True, slots=True)
class FleetMembers(Event):
    """How many instances (this one included) are alive."""

    instances: int
