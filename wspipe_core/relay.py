"""The relay: how one message crosses the proxy, the same code for both directions.

A message (or fragment) read from an endpoint goes to that endpoint's ``peer`` —
the pipe's live link for a client, the client for a link. A whole one-frame message
on a live relay is re-sent as it came (the fast path). Otherwise fragments are
assembled up to ``max_message_size`` and the whole message is sent, or, when the
direction has no destination now, held in the direction's :class:`Lane` — bounded
by ``buffer_limit`` and the memory budget, with the buffer policy deciding when a
message does not fit. What the verdict means for the pipe (1009, 1013, stop
reading) is the session's decision.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Any

from wsproto.events import BytesMessage, TextMessage

from .assembler import Message, payload_size
from .buffer import MemoryBudget, ReplayBuffer
from .codes import LimitKind
from .config import ProxyConfig
from .flow import Endpoint, Flow, Hold
from .hooks import Hooks
from .info import BufferFullAction
from .logs import pipe_log
from .stats import Stats

Frame = TextMessage | BytesMessage


class Verdict(enum.Enum):
    """What became of a message handed to :meth:`Relay.forward`."""

    #: Sent, held, or dropped as the policy says: read on.
    GO = "go"
    #: It takes its sender's message over ``max_message_size`` (close with 1009).
    TOO_BIG = "too_big"
    #: It does not fit and the buffer policy says close (1013).
    FULL = "full"
    #: It does not fit and the buffer policy paused the sender: stop reading frames.
    PAUSED = "paused"


class Lane:
    """One direction of a pipe: the messages waiting for a destination, and what they cost.

    ``buffer`` holds messages waiting for a link; with ``retain`` (at-least-once and
    acked delivery), ``retained`` holds the messages written to the link and not yet
    confirmed. ``held`` is what the limits count: the sender's message in progress plus
    both (payload bytes plus ``buffer_message_overhead`` per message).
    """

    __slots__ = ("buffer", "counts_assembly", "dropped", "held", "next_seq", "overflow",
                 "owner", "paused", "paused_since", "retain", "retained")

    def __init__(self, overhead: int, owner: Any = None, *, retain: bool = False,
                 counts_assembly: bool = True) -> None:
        #: The pipe it belongs to.
        self.owner: Any = owner
        #: Whether its sender's message in progress counts against the limits (the
        #: client's does; a backend's is bounded by ``max_message_size`` alone).
        self.counts_assembly = counts_assembly
        self.buffer = ReplayBuffer(overhead)
        #: Whether messages written to a link are kept until confirmed.
        self.retain = retain
        self.retained = ReplayBuffer(overhead)
        #: The sequence number of the next complete message (1, 2, ...).
        self.next_seq = 1
        #: Bytes counted against ``buffer_limit`` and the memory budget.
        self.held = 0
        #: Whether the ``pause`` policy stopped reading the sender.
        self.paused = False
        #: When the pause began (a pause longer than ``max_interruption`` ends the pipe).
        self.paused_since: float | None = None
        #: The message (or fragment) the ``pause`` policy held back.
        self.overflow: Frame | None = None
        #: Messages dropped by the ``drop_oldest`` policy.
        self.dropped = 0


def _unconfirmed(pipe: Any, lane: Lane | None) -> str:
    """Why a retaining lane is full: the messages its backend has not confirmed."""
    if lane is None or not len(lane.retained):
        return ""
    what = "acknowledged (does the backend send acks?)" if pipe.delivery.value == "acked" \
        else "confirmed by a pong"
    return (f", {len(lane.retained)} messages ({lane.retained.bytes} bytes) of it written to "
            f"the backend and not {what}")


def frame(message: Message) -> Frame:
    """The wsproto event that sends a whole message."""
    return TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)


class Relay:
    """Forwards, assembles and holds messages; applies the buffer policy."""

    def __init__(self, config: ProxyConfig, flow: Flow, budget: MemoryBudget, hooks: Hooks,
                 stats: Stats) -> None:
        self._max = config.max_message_size
        self._limit = config.buffer_limit
        self._flow = flow
        self._budget = budget
        self._hooks = hooks
        self._stats = stats
        #: Ends a pipe that must make room (``evict(pipe, now)``); set by the session.
        self.evict: Callable[[Any, float], None] | None = None

    def forward(self, pipe: Any, src: Endpoint, lane: Lane | None, event: Frame,
                now: float) -> Verdict:
        """Relay one message or fragment ``src`` sent.

        :param pipe: The pipe (for the buffer policy's snapshot).
        :param lane: Where the message waits when ``src`` has no destination; ``None``
            drops it then (its pipe is ending).
        """
        data = event.data
        n = len(data) if type(data) is not str else payload_size(data)
        dst = src.peer
        asm = src.assembler
        if event.message_finished and dst is not None and asm.idle and n <= self._max:
            # Fast paths: a whole one-frame message on a live relay, re-sent as it came.
            if lane is None or not lane.retain:
                stats = self._stats  # (inlined: this is the per-message path)
                if src.INBOUND:
                    stats.messages_in += 1
                    stats.bytes_in += n
                else:
                    stats.messages_out += 1
                    stats.bytes_out += n
                self._flow.write(dst, dst.ws.send(event))
                dst.written += 1
                return Verdict.GO
            # Retained: the payload it came with is kept (no copy) until confirmed.
            retained = lane.retained
            cost = n + retained.overhead
            budget = self._budget
            if lane.held + cost <= self._limit and budget.used + cost <= budget.limit:
                stats = self._stats  # (only a client's lane retains: inbound)
                stats.messages_in += 1
                stats.bytes_in += n
                self._flow.write(dst, dst.ws.send(event))
                dst.written += 1
                seq = lane.next_seq
                retained.append(data, n, seq)
                lane.next_seq = seq + 1
                budget.grow(lane, cost)
                return Verdict.GO
        if asm.size + n > self._max:
            return Verdict.TOO_BIG
        if lane is not None:
            if not event.message_finished:
                # Held in the assembler until the message is complete.
                growth = n if lane.counts_assembly else 0
            elif dst is None or lane.retain:
                growth = n + lane.buffer.overhead  # buffered, or written and retained
            else:
                growth = 0
            if growth:
                verdict = self._make_room(pipe, src, lane, event, n, growth, now)
                if verdict is not Verdict.GO:
                    return verdict
        prior = asm.size
        message = asm.feed(event, n)
        if message is not None:
            self._count(src, prior + n)
            if dst is not None:
                # The event as it came when it is the whole message: no second copy.
                whole = event if message is data else frame(message)
                self._flow.write(dst, dst.ws.send(whole))
                dst.written += 1
                if lane is not None and lane.retain:
                    lane.retained.append(message, prior + n, lane.next_seq)
                    lane.next_seq += 1
            elif lane is not None:
                lane.buffer.append(message, prior + n, lane.next_seq)
                lane.next_seq += 1
        if lane is not None:
            self.account(lane, src)
        return Verdict.GO

    def _count(self, src: Endpoint, nbytes: int) -> None:
        stats = self._stats
        if src.INBOUND:
            stats.messages_in += 1
            stats.bytes_in += nbytes
        else:
            stats.messages_out += 1
            stats.bytes_out += nbytes

    def _make_room(self, pipe: Any, src: Endpoint, lane: Lane, event: Frame, n: int,
                   growth: int, now: float) -> Verdict:
        """Apply the buffer policy while ``growth`` more bytes do not fit."""
        budget = self._budget
        while True:
            if lane.held + growth > self._limit:
                reason, limit = LimitKind.BUFFER_LIMIT, self._limit
            elif not budget.fits(growth):
                largest = budget.largest()
                if (largest is not None and largest.held > lane.held
                        and self._make_room_elsewhere(largest, pipe, n, now)):
                    continue
                reason, limit = LimitKind.MEMORY_BUDGET, budget.limit
            else:
                return Verdict.GO
            action = self._hooks.buffer_full(pipe.info(), n, limit, reason)
            if action is BufferFullAction.DROP_OLDEST and len(lane.buffer):
                lane.buffer.drop_oldest()
                lane.dropped += 1
                self._stats.messages_dropped += 1
                self.account(lane, src)
                continue
            if action is BufferFullAction.PAUSE:
                lane.overflow = event
                lane.paused = True
                if lane.paused_since is None:
                    lane.paused_since = now
                if reason is LimitKind.MEMORY_BUDGET:
                    self._flow.wait_for_budget(pipe)
                pipe_log(logging.INFO, pipe, "%s reached (%d bytes)%s; not reading the client",
                         reason, limit, _unconfirmed(pipe, lane))
                self._flow.hold(src, Hold.POLICY)
                return Verdict.PAUSED
            pipe_log(logging.WARNING, pipe, "%s reached (%d bytes)%s; closing the client",
                     reason, limit, _unconfirmed(pipe, lane))
            return Verdict.FULL

    def _make_room_elsewhere(self, largest: Any, pipe: Any, n: int, now: float) -> bool:
        """The budget is short and ``largest`` holds more than ``pipe``: it pays first.

        Its buffer policy decides; ``True`` if that freed bytes (it dropped its oldest
        message, or it was closed). A ``pause`` frees nothing: then ``pipe`` pays.
        """
        victim: Lane = largest
        other = victim.owner
        action = self._hooks.buffer_full(other.info(), n, self._budget.limit,
                                         LimitKind.MEMORY_BUDGET)
        if action is BufferFullAction.DROP_OLDEST and len(victim.buffer):
            victim.buffer.drop_oldest()
            victim.dropped += 1
            self._stats.messages_dropped += 1
            self.account(victim, other.client)  # (a lane that counts no assembly ignores it)
            return True
        if action is BufferFullAction.PAUSE or self.evict is None:
            return False
        pipe_log(logging.WARNING, other, "memory_budget reached; it holds the most (%d bytes): "
                 "closing the client to make room for pipe %s", victim.held, pipe.id)
        self._stats.budget_evictions += 1
        self.evict(other, now)
        return True

    def replay(self, lane: Lane, src: Endpoint, dst: Endpoint) -> int:
        """Send everything ``lane`` holds to ``dst``, oldest first; the number of messages.

        With ``retain``, what is sent is retained again until this link confirms it.
        """
        items = lane.buffer.drain()
        for seq, message, size in items:
            self._flow.write(dst, dst.ws.send(frame(message)))
            dst.written += 1
            if lane.retain:
                lane.retained.append(message, size, seq)
        self._stats.messages_replayed += len(items)
        self.account(lane, src)
        return len(items)

    def confirm(self, lane: Lane, src: Endpoint, upto: int) -> int:
        """The link confirmed every message numbered ``upto`` or less; how many it freed."""
        count = lane.retained.confirm(upto)
        if count:
            self.account(lane, src)
        return count

    def requeue(self, lane: Lane) -> int:
        """The link is lost: what it did not confirm goes first in line for the next one."""
        items = lane.retained.drain()
        lane.buffer.prepend(items)
        return len(items)

    def clear(self, lane: Lane, src: Endpoint) -> None:
        """Drop everything ``lane`` holds (its pipe ended) and give the bytes back."""
        lane.buffer.drain()
        lane.retained.drain()
        if lane.counts_assembly:
            src.assembler.reset()
        lane.overflow = None
        lane.paused = False
        lane.paused_since = None
        self.account(lane, src)

    def account(self, lane: Lane, src: Endpoint) -> None:
        """Bring ``lane.held`` and the memory budget up to date."""
        held = lane.buffer.cost + lane.retained.cost
        if lane.counts_assembly:
            held += src.assembler.size
        if held != lane.held:
            if held < lane.held:
                self._flow.budget_freed = True
            self._budget.update(lane, held)
