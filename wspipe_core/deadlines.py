"""The core's timers: one deadline per object, the earliest found without scanning.

Every object with deadlines (a pending client, a pipe, a link, the pool, the
migration queue) has one entry, keyed by the object itself. Code that changes an
object's timing *touches* it; before a call returns, :meth:`Timers.flush` asks each
touched object for its ``next_deadline()``. Touched objects are kept in order and
ties are broken by insertion order, so the core fires timers deterministically.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Protocol

#: A deadline met this much later than it was due means the proxy itself was not
#: running (a stall: starved CPU, a long pause): what a peer sent meanwhile may be
#: sitting unread, so the deadline is moved :data:`GRACE` past now instead of fired.
LATE = 0.5
GRACE = 0.1


def overslept(due: float, now: float) -> bool:
    """Whether a deadline ``due`` fires so late (``now``) that the proxy, not the peer,
    was the one not running; the caller then gives the peer :data:`GRACE`."""
    return now - due > LATE


class Timed(Hashable, Protocol):
    """An object that knows its next deadline."""

    def next_deadline(self) -> float | None:
        """The earliest time it must be woken, or ``None``."""
        ...


class Deadlines:
    """At most one deadline per key; the earliest is found without scanning."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Hashable]] = []
        self._when: dict[Hashable, float] = {}
        self._seq = itertools.count()

    def set(self, key: Hashable, when: float | None) -> None:
        """Set (or with ``None`` clear) the deadline of ``key``."""
        if when is None:
            self._when.pop(key, None)
            return
        if self._when.get(key) == when:
            return
        self._when[key] = when
        heapq.heappush(self._heap, (when, next(self._seq), key))
        if len(self._heap) > 2 * len(self._when) + 64:
            # Stale entries are dropped lazily; rebuild so the heap stays O(live keys).
            self._heap = [(w, next(self._seq), k) for k, w in self._when.items()]
            heapq.heapify(self._heap)

    def next(self) -> float | None:
        """The earliest deadline, or ``None``."""
        heap = self._heap
        while heap:
            when, _, key = heap[0]
            if self._when.get(key) == when:
                return when
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[Hashable]:
        """Remove and return the keys whose deadline is ``<= now``, earliest first."""
        due: list[Hashable] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, key = heapq.heappop(heap)
            if self._when.get(key) == when:
                del self._when[key]
                due.append(key)
        return due

    def __len__(self) -> int:
        return len(self._when)

    @property
    def heap_size(self) -> int:
        """Entries in the heap, stale ones included (bounded by the rebuild rule)."""
        return len(self._heap)


class Timers:
    """Deadlines of timed objects, recomputed for the objects touched since the last flush."""

    def __init__(self) -> None:
        self.deadlines = Deadlines()
        #: Objects whose deadline must be re-read (in touch order).
        self.touched: dict[Timed, None] = {}

    def touch(self, obj: Timed) -> None:
        """``obj``'s timing may have changed: re-read it at the next :meth:`flush`."""
        self.touched[obj] = None

    def cancel(self, obj: Timed) -> None:
        """Forget ``obj``: it is gone and must not fire."""
        self.touched.pop(obj, None)
        self.deadlines.set(obj, None)

    def flush(self) -> None:
        """Re-read the deadline of every touched object."""
        if self.touched:
            touched, self.touched = self.touched, {}
            for obj in touched:
                self.deadlines.set(obj, obj.next_deadline())

    def next(self) -> float | None:
        """The earliest deadline (call :meth:`flush` first)."""
        return self.deadlines.next()

    def pop_due(self, now: float) -> list[Hashable]:
        """The objects due at ``now``, earliest first; they are touched again after firing."""
        return self.deadlines.pop_due(now)

    def __len__(self) -> int:
        return len(self.deadlines)
