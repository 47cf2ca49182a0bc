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

    __slots__ = ("_dirty", "_heap", "_seq", "high_water", "holders", "limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        #: Most bytes ever held at once.
        self.high_water = 0
        #: Holders with bytes (the heap keeps stale entries; this bounds it).
        self.holders = 0
        self._heap: list[tuple[int, int, Holder]] = []
        self._seq = itertools.count()
        #: Holders that grew since the heap last saw them (indexed lazily, on demand).
        self._dirty: dict[Holder, None] = {}

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
        if held > before:
            self._mark(holder)

    def grow(self, holder: Holder, nbytes: int) -> None:
        """``holder`` holds ``nbytes`` more (the per-message path: no heap work here)."""
        before = holder.held
        holder.held = before + nbytes
        self.used += nbytes
        if self.used > self.high_water:
            self.high_water = self.used
        if not before:
            self.holders += 1
        if holder not in self._dirty:  # (marked once until the heap indexes it)
            self._mark(holder)

    def _mark(self, holder: Holder) -> None:
        dirty = self._dirty
        dirty[holder] = None
        if len(dirty) > 2 * self.holders + 64:
            self._index()  # bounded: holders that went away do not pile up here

    def _index(self) -> None:
        heap = self._heap
        for holder in self._dirty:
            if holder.held:
                heapq.heappush(heap, (-holder.held, next(self._seq), holder))
        self._dirty.clear()
        if len(heap) > 2 * self.holders + 64:
            # Stale entries are dropped lazily; rebuild so the heap stays O(holders).
            live = {id(h): h for _, _, h in heap if h.held}
            self._heap = [(-h.held, next(self._seq), h) for h in live.values()]
            heapq.heapify(self._heap)

    def largest(self) -> Holder | None:
        """The holder of the most bytes (the oldest of equals), or ``None``."""
        if self._dirty:
            self._index()
        heap = self._heap
        while heap:
            held, _, holder = heap[0]
            if -held == holder.held:
                return holder
            heapq.heappop(heap)
            if holder.held:  # it shrank since: index it again at what it holds now
                heapq.heappush(heap, (-holder.held, next(self._seq), holder))
        return None


#: One held message: its sequence number in the pipe, the message, its payload bytes.
Item = tuple[int, Message, int]
#: The items of every empty buffer (never appended to: ``append`` replaces it).
_EMPTY: deque[Item] = deque(maxlen=0)


class ReplayBuffer:
    """Client messages held in order: waiting for a link, or written and not yet confirmed.

    Each message keeps its sequence number in the pipe (1, 2, ...). ``bytes`` counts
    payload bytes; ``cost`` adds ``overhead`` bytes per message and is what the limits
    are checked against. The buffer does not enforce limits: the relay asks
    ``wspipe_buffer_full`` before adding what does not fit.
    """

    __slots__ = ("_items", "bytes", "overhead")

    def __init__(self, overhead: int = 0) -> None:
        #: Created with the first message: most buffers of idle pipes never hold one.
        self._items: deque[Item] = _EMPTY
        self.bytes = 0
        #: Bytes charged per message on top of its payload.
        self.overhead = overhead

    def __len__(self) -> int:
        return len(self._items)

    @property
    def cost(self) -> int:
        """Bytes charged against the limits: payload plus a fixed overhead per message."""
        return self.bytes + self.overhead * len(self._items)

    @property
    def first_seq(self) -> int | None:
        """The sequence number of the oldest message, or ``None`` when empty."""
        return self._items[0][0] if self._items else None

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest message, or 0 when empty."""
        return self._items[-1][0] if self._items else 0

    def append(self, message: Message, size: int | None = None, seq: int = 0) -> None:
        size = payload_size(message) if size is None else size
        if self._items is _EMPTY:
            self._items = deque()
        self._items.append((seq, message, size))
        self.bytes += size

    def items(self) -> list[Item]:
        """What it holds, oldest first (a copy; nothing is removed)."""
        return list(self._items)

    def drain(self) -> list[Item]:
        """Remove and return every message, oldest first."""
        items = list(self._items)
        self._items = _EMPTY
        self.bytes = 0
        return items

    def prepend(self, items: list[Item]) -> None:
        """Put ``items`` (oldest first) before everything held."""
        if not items:
            return
        if self._items is _EMPTY:
            self._items = deque()
        self._items.extendleft(reversed(items))
        self.bytes += sum(size for _, _, size in items)

    def confirm(self, upto: int) -> int:
        """Drop the messages numbered ``upto`` or less (they were delivered); how many."""
        items = self._items
        if items and items[-1][0] <= upto:
            # All of it (the usual pong): one step, not one pop per message.
            count = len(items)
            self._items = _EMPTY
            self.bytes = 0
            return count
        count = 0
        while items and items[0][0] <= upto:
            self.bytes -= items.popleft()[2]
            count += 1
        return count

    def drop_oldest(self) -> int:
        """Drop the oldest message; return its size."""
        _, _, size = self._items.popleft()
        self.bytes -= size
        return size
