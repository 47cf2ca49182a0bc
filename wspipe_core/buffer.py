"""The replay buffer of a pipe and the process-wide memory budget."""

from __future__ import annotations

from collections import deque

from .assembler import Message, payload_size


class MemoryBudget:
    """Bytes held (buffered and in progress) over all pipes, against one limit."""

    __slots__ = ("high_water", "limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        #: Most bytes ever held at once.
        self.high_water = 0

    def fits(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more would stay within the budget."""
        return self.used + nbytes <= self.limit

    def take(self, nbytes: int) -> None:
        self.used += nbytes
        self.high_water = max(self.high_water, self.used)

    def give_back(self, nbytes: int) -> None:
        self.used -= nbytes


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
