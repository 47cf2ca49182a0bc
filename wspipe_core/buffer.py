"""The replay buffer of a pipe and the process-wide memory budget.

**Who pays when the budget is short.** When a message does not fit the memory
budget, the holder of the most bytes pays first (its buffer policy decides: it is
closed with 1013, or drops its oldest messages), not whoever happens to ask next; a
pipe pays for itself only when it holds the most. So a pipe holding less than
another is never closed because of the other's flood. :meth:`MemoryBudget.largest`
finds that holder without scanning every pipe.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Protocol

from .assembler import Message, payload_size


class Holder(Protocol):
    """Something that holds bytes against the budget (a pipe's lane)."""

    #: Bytes it holds now.
    held: int


class MemoryBudget:
    """Bytes held (buffered and in progress) over all pipes, against one limit."""

    __slots__ = ("_heap", "_seq", "high_water", "holders", "limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        #: Most bytes ever held at once.
        self.high_water = 0
        #: Holders with bytes (the heap keeps stale entries; this bounds it).
        self.holders = 0
        self._heap: list[tuple[int, int, Holder]] = []
        self._seq = itertools.count()

    def fits(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more would stay within the budget."""
        return self.used + nbytes <= self.limit

    def update(self, holder: Holder, held: int) -> None:
        """``holder`` now holds ``held`` bytes (it still says what it held before)."""
        before = holder.held
        self.used += held - before
        if self.used > self.high_water:
            self.high_water = self.used
        holder.held = held
        self.holders += (held > 0) - (before > 0)
        if held:
            heapq.heappush(self._heap, (-held, next(self._seq), holder))
            if len(self._heap) > 2 * self.holders + 64:
                # Stale entries are dropped lazily; rebuild so the heap stays O(holders).
                live = {id(h): h for _, _, h in self._heap if h.held}
                self._heap = [(-h.held, next(self._seq), h) for h in live.values()]
                heapq.heapify(self._heap)

    def largest(self) -> Holder | None:
        """The holder of the most bytes (the oldest of equals), or ``None``."""
        heap = self._heap
        while heap:
            held, _, holder = heap[0]
            if -held == holder.held:
                return holder
            heapq.heappop(heap)
        return None


class ReplayBuffer:
    """Client messages held in arrival order while a pipe has no live link.

    ``bytes`` counts payload bytes; ``cost`` adds ``overhead`` bytes per message and is
    what the limits are checked against. The buffer does not enforce limits: the
    pipe asks ``wspipe_buffer_full`` before adding what does not fit. Messages leave
    it only by ``drain`` (flushed to a new link) or ``drop_oldest``, so a future
    at-least-once mode can keep written-but-unacknowledged messages here too.
    """

    __slots__ = ("_items", "bytes", "overhead")

    def __init__(self, overhead: int = 0) -> None:
        self._items: deque[tuple[Message, int]] = deque()
        self.bytes = 0
        #: Bytes charged per message on top of its payload.
        self.overhead = overhead

    def __len__(self) -> int:
        return len(self._items)

    @property
    def cost(self) -> int:
        """Bytes charged against the limits: payload plus a fixed overhead per message."""
        return self.bytes + self.overhead * len(self._items)

    def append(self, message: Message, size: int | None = None) -> None:
        size = payload_size(message) if size is None else size
        self._items.append((message, size))
        self.bytes += size

    def drain(self) -> list[Message]:
        """Remove and return every message, oldest first."""
        items = [message for message, _ in self._items]
        self._items.clear()
        self.bytes = 0
        return items

    def drop_oldest(self) -> int:
        """Drop the oldest message; return its size."""
        _, size = self._items.popleft()
        self.bytes -= size
        return size
