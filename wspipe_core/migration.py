"""Paced migration: moving the pipes of draining backends, ``migrate_rate`` pipes a second.

A drain with migrate queues the pipes that are on the backend at that moment. The
pace is one pipe every ``1 / migrate_rate`` seconds for the whole proxy (not per
backend), taking the draining backends in turn, so a drain never floods the other
backends with replays. It runs on the core's clock: :meth:`Migrations.next_deadline`
joins the proxy's deadlines and the proxy moves the pipe :meth:`Migrations.due`
names. What "moving" means (close the link with 1001, fail over, replay) is the
session's business; this module only decides which pipe goes next and when.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from .info import MigrationInfo


class Move(Enum):
    """What became of the pipe a migration turn named."""

    #: It was moved (its turn used a slot of the rate).
    MOVED = "moved"
    #: It is no longer on the backend (it ended or failed over): next one, same slot.
    GONE = "gone"
    #: No other backend can take it now: keep it first in line and try again later.
    WAIT = "wait"


@dataclass(eq=False)
class _Migration:
    backend_id: str
    pipe_ids: deque[str]
    started: float
    total: int
    moved: int = 0
    #: Whether the last turn found no other backend to move to.
    waiting: bool = False

    def info(self) -> MigrationInfo:
        return MigrationInfo(self.backend_id, self.total, self.moved, len(self.pipe_ids),
                             self.started, self.waiting)


@dataclass(eq=False)
class Migrations:
    """The queue of pipes to move, and when the next one may move."""

    rate: float
    _queues: dict[str, _Migration] = field(default_factory=dict)
    _next_at: float | None = None

    @property
    def interval(self) -> float:
        """Seconds between two moves."""
        return 1.0 / self.rate

    def start(self, backend_id: str, pipe_ids: list[str], now: float) -> None:
        """Queue ``pipe_ids`` of ``backend_id``; a backend already migrating is left as is."""
        if backend_id in self._queues or not pipe_ids:
            return
        self._queues[backend_id] = _Migration(backend_id, deque(pipe_ids), now, len(pipe_ids))
        if self._next_at is None:
            self._next_at = now  # the first move is at once

    def stop(self, backend_id: str) -> None:
        """Forget the migration of ``backend_id`` (it left the pool)."""
        self._queues.pop(backend_id, None)
        if not self._queues:
            self._next_at = None

    def next_deadline(self) -> float | None:
        """When the next pipe may move, or ``None`` when nothing is queued."""
        return self._next_at if self._queues else None

    def due(self, now: float) -> tuple[str, str] | None:
        """The (backend id, pipe id) whose turn it is at ``now``, or ``None``."""
        if not self._queues or self._next_at is None or now < self._next_at:
            return None
        migration = next(iter(self._queues.values()))
        return migration.backend_id, migration.pipe_ids[0]

    def done(self, backend_id: str, move: Move, now: float) -> None:
        """Record what the turn :meth:`due` gave did; sets when the next turn is."""
        migration = self._queues[backend_id]
        if move is Move.WAIT:
            migration.waiting = True
            self._next_at = now + self.interval
            return
        migration.waiting = False
        migration.pipe_ids.popleft()
        if move is Move.MOVED:
            migration.moved += 1
            # Never faster than the rate, even after a late turn: no bursts.
            self._next_at = now + self.interval
        # Take the draining backends in turn.
        del self._queues[backend_id]
        if migration.pipe_ids:
            self._queues[backend_id] = migration
        if not self._queues:
            self._next_at = None

    def __contains__(self, backend_id: str) -> bool:
        return backend_id in self._queues

    def snapshot(self) -> list[MigrationInfo]:
        """The migrations under way."""
        return [m.info() for m in self._queues.values()]
