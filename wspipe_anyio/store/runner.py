"""The store's tasks: execute the core's store actions in order, poll the store, report.

The relay never waits on the store. :meth:`StoreRunner.submit` (called from the
synchronous dispatch) puts an action on a bounded queue and returns; one task executes
them in order, each bounded by ``timeout``. A full queue drops the action with a log
line and a count (a dropped claim fails open by the core's own ``store_timeout``, a
dropped renewal is covered by the next one). Another task heartbeats every
``poll_interval``: that says this instance is alive, reads the registry's version and
the number of live instances, and reloads the registry when the version moved or the
store came back. Every answer goes to the core as an event (``feed``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from wspipe_core.events import Event
from wspipe_core.store import (
    ClaimResult,
    FleetMembers,
    HandoverArrived,
    HandoverRequested,
    RegistrySnapshot,
    StoreAction,
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
    StoreUnpark,
)

if TYPE_CHECKING:
    from .redis import RedisStore

log = logging.getLogger("wspipe")

#: Store actions waiting to be executed, at most.
QUEUE_SIZE = 4096
#: Session exports this instance waits for, at most, and for how long.
MAX_AWAITED = 10_000
AWAIT_FOR = 30.0


class StoreRunner:
    """Runs one instance's store traffic. Start :meth:`run` in a task group.

    :param store: The connected store.
    :param instance: This instance's id.
    :param feed: Hands an event to the core (and executes what it returns).
    :param describe: This instance's description for ``GET /fleet`` (called each poll).
    :param poll_interval: Seconds between two heartbeats (registry changes apply within
        about this long).
    :param member_ttl: An instance that has not heartbeat for this long is not counted.
    :param timeout: Longest wait for one store operation.
    """

    def __init__(self, store: RedisStore, instance: str, feed: Callable[[Event], None],
                 describe: Callable[[], dict[str, Any]], *, poll_interval: float = 0.25,
                 member_ttl: float = 10.0, timeout: float = 1.0) -> None:
        self.store = store
        self.instance = instance
        self._feed = feed
        self._describe = describe
        self.poll_interval = poll_interval
        self.member_ttl = member_ttl
        self.timeout = timeout
        self._send: MemoryObjectSendStream[StoreAction]
        self._receive: MemoryObjectReceiveStream[StoreAction]
        self._send, self._receive = anyio.create_memory_object_stream[StoreAction](QUEUE_SIZE)
        #: Whether the last operation reached the store.
        self.up = False
        #: Counters for metrics: operations that failed, actions dropped (queue full),
        #: leases found held by another instance on renewal.
        self.errors = 0
        self.dropped = 0
        self.lease_conflicts = 0
        self.members = 0
        #: The descriptions of the live instances, read at most every ``view_every`` s.
        self.instances: list[dict[str, Any]] = []
        self.view_every = 1.0
        self._viewed = float("-inf")
        #: The registry is read whole this often even when its version did not move (a
        #: change a pool could not take yet, such as re-adding a URL still draining here,
        #: applies once it can).
        self.reload_every = 2.0
        self._loaded = float("-inf")
        self._version: int | None = None
        self._reload = True
        #: Client ids whose session export this instance asked for, and until when.
        self._awaited: dict[str, float] = {}

    def submit(self, action: StoreAction) -> None:
        """Queue ``action`` (from the synchronous dispatch; never blocks)."""
        try:
            self._send.send_nowait(action)
        except anyio.WouldBlock:
            self.dropped += 1
            log.warning("store: request queue full (%d): %s dropped", QUEUE_SIZE,
                        type(action).__name__)

    async def run(self) -> None:
        """Execute actions and poll until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._poll)
            await self._execute_all()

    async def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until every queued action was executed."""
        with anyio.move_on_after(timeout):
            while self._send.statistics().current_buffer_used:
                await anyio.sleep(0.01)

    # -- the action queue

    async def _execute_all(self) -> None:
        async for action in self._receive:
            try:
                with anyio.fail_after(self.timeout):
                    await self._execute(action)
            except Exception as exc:  # (coredis errors, TimeoutError, OSError)
                self.failed(exc)
                if isinstance(action, StoreClaim):
                    self._feed(StoreClaimed(action.client_id, ClaimResult.UNAVAILABLE))
            else:
                self._reached()

    async def _execute(self, action: StoreAction) -> None:
        store = self.store
        match action:
            case StoreClaim(client_id, holder, ttl, steal):
                result, current, principal = await store.claim(client_id, holder, ttl,
                                                               steal=steal)
                self._feed(StoreClaimed(client_id, result, current, principal))
            case StorePark(client_id, holder, principal, ttl):
                await store.park(client_id, holder, principal, ttl)
            case StoreUnpark(client_id, holder):
                await store.unpark(client_id, holder)
            case StoreHandover(client_id, source, target):
                if len(self._awaited) < MAX_AWAITED:
                    self._awaited[client_id] = anyio.current_time() + AWAIT_FOR
                await store.handover(client_id, source, target)
            case StoreHandoff(client_id, holder, target, blob, ttl):
                await store.handoff(client_id, holder, target, blob, ttl)
            case StoreRenew(client_ids, holder, ttl):
                lost = await store.renew(client_ids, holder, ttl)
                if lost:
                    self.lease_conflicts += lost
                    log.warning("store: %d lease(s) of this instance are held by another "
                                "instance (both accepted the client id while the store was "
                                "unreachable)", lost)
            case StoreRelease(client_id, holder):
                await store.release(client_id, holder)
            case StorePublish(entry):
                await store.publish(entry)
                self._reload = True
            case StoreSeed(entries):
                if await store.seed(entries):
                    self._reload = True
            case _:
                raise RuntimeError(f"unknown store action {action!r}")

    # -- polling

    async def _poll(self) -> None:
        while True:
            try:
                with anyio.fail_after(self.timeout):
                    await self._poll_once()
            except Exception as exc:
                self.failed(exc)
            await anyio.sleep(self.poll_interval)

    async def _poll_once(self) -> None:
        version, members = await self.store.heartbeat(self.instance, self._describe(),
                                                      self.member_ttl)
        self._reached()
        if members != self.members:
            self.members = members
            self._feed(FleetMembers(members))
        now = anyio.current_time()
        if now - self._viewed >= self.view_every:
            self._viewed = now
            self.instances = await self.store.instances()
        for client_id, target in await self.store.handovers(self.instance):
            self._feed(HandoverRequested(client_id, target))
        for client_id, until in list(self._awaited.items()):
            if now > until:
                del self._awaited[client_id]
                continue
            blob = await self.store.take_export(client_id)
            if blob is not None:
                del self._awaited[client_id]
                self._feed(HandoverArrived(client_id, blob))
        if (self._reload or version != self._version or version < 0
                or now - self._loaded >= self.reload_every):
            self._reload = False
            self._loaded = now
            entries = await self.store.registry()
            self._version = version
            self._feed(RegistrySnapshot(version, entries))

    def _reached(self) -> None:
        if not self.up:
            self.up = True
            self._reload = True
            log.info("store reachable")
            self._feed(StoreHealth(True))

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.up:
            self.up = False
            log.warning("store unreachable: %s", str(exc) or type(exc).__name__)
            self._feed(StoreHealth(False))
