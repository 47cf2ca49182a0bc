"""A heap of per-object deadlines with lazy invalidation: O(log n) set, O(1) peek."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable


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
