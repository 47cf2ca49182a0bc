"""Delivery: what a pipe promises for client messages across an interruption.

``at-most-once``
    A message written to a link that dies may be lost, never duplicated. The core
    counts what *may* have been lost: messages written to the link since its last pong
    (``Stats.possibly_lost``; an upper bound of what the backend never read).
``at-least-once``
    Messages written to a link are retained (they count against ``buffer_limit`` and
    the memory budget like buffered ones) until a pong answers a ping the proxy sent
    after them: one confirmation ping per burst of writes, one in flight at a time and
    ``confirm_interval`` apart at least, a due one riding on the next burst's write,
    so the retained window is what a link carries in one round trip plus that interval
    (two on a link that goes quiet: the timer sends a ping no burst carried). On any
    interruption — EOF, reset, ping timeout, a backend Close with an interruption
    code (frameworks drop what arrives in their last milliseconds) — the unconfirmed
    messages are replayed first, in order, on the next link, then the buffer.
    A pong proves the backend's WebSocket layer read the message, not that the
    application processed it: duplicates are possible and counted.
``acked``
    Messages are retained until the backend acknowledges it *processed* them: a text
    message ``ack_prefix + <sequence number>`` (never relayed to the client) confirms
    every client message up to that number. Each link's handshake says the number of
    the first message it carries; after an interruption the proxy replays from the
    first unacknowledged one and the backend drops what it has already processed.

Every link's handshake carries the session it continues (``<prefix>session``), its
number (``<prefix>link``: 1, then 2 after the first failover, ...), the mode
(``<prefix>delivery``), how many replayed messages a previous backend may already
have seen (``<prefix>replayed``), and, when messages are retained, the sequence
number of the first message on this link (``<prefix>seq``).
"""

from __future__ import annotations

from .codes import Delivery, InterruptionCause
from .config import ProxyConfig
from .deadlines import Timers
from .keepalive import Keepalive
from .link import CONFIRM_PREFIX, Link
from .pipe import Pipe
from .relay import Relay
from .stats import Stats


class Deliveries:
    """Confirmation, acknowledgement and replay of client messages, per pipe's mode."""

    def __init__(self, config: ProxyConfig, relay: Relay, keepalive: Keepalive,
                 timers: Timers, stats: Stats) -> None:
        self._prefix = config.session_header_prefix.lower()
        self._ack_prefix = config.ack_prefix
        self._confirm_interval = config.confirm_interval
        self._relay = relay
        self._keepalive = keepalive
        self._timers = timers
        self._stats = stats

    def after_burst(self, pipe: Pipe, now: float) -> None:
        """Messages may have been written to the live link: ask it to confirm them.

        At most one confirmation ping is in flight per link, and two go out at least
        ``confirm_interval`` apart: the next one when its pong has come back and the
        interval has passed, if more was written meanwhile. A due ping rides on the
        next burst (it joins that burst's write: no write, wakeup or timer of its own);
        if no burst comes within another interval, the link's timer sends it.
        """
        if pipe.delivery is not Delivery.AT_LEAST_ONCE:
            return
        link = pipe.link
        if link is None or pipe.client.peer is not link or link.confirming:
            return
        last = pipe.lane.retained.last_seq
        if last > link.confirm_asked:
            due = link.confirm_sent + self._confirm_interval
            if now < due:
                if link.confirm_at is None:
                    link.confirm_at = due + self._confirm_interval
                    self._timers.touch(link)
                return
            link.confirm_at = None
            link.confirm_sent = now
            link.confirm_asked = last
            link.confirming = True
            self._keepalive.ping(link, CONFIRM_PREFIX + str(last).encode(), now)
            self._timers.touch(link)

    def confirm_due(self, link: Link, now: float) -> None:
        """``link``'s timer passed: send its waiting confirmation ping if it is due."""
        if link.confirm_at is not None and now >= link.confirm_at:
            link.confirm_at = None
            self.after_burst(link.owner, now)

    def confirmed(self, pipe: Pipe, link: Link, seq: int, now: float) -> None:
        """``link``'s pong confirmed the messages up to ``seq``."""
        link.confirming = False
        if pipe.link is link:
            self._stats.confirmations += 1
            self._relay.confirm(pipe.lane, pipe.client, seq)
            self.after_burst(pipe, now)

    def ack(self, pipe: Pipe, link: Link, data: str) -> bool:
        """A text message from the backend: ``True`` if it is an ack (not for the client)."""
        prefix = self._ack_prefix
        if not data.startswith(prefix):
            return False
        digits = data[len(prefix):]
        if digits.isdigit() and pipe.link is link:
            self._stats.confirmations += 1
            self._relay.confirm(pipe.lane, pipe.client, int(digits))
        return True

    def interrupted(self, pipe: Pipe, link: Link, cause: InterruptionCause) -> int:
        """The live link is lost: put back what it did not confirm; how many.

        With retention those messages go first in line for the next link (and may
        arrive twice); at-most-once counts the messages possibly lost.
        """
        lane = pipe.lane
        if lane.retain:
            count = self._relay.requeue(lane)
            self._stats.unconfirmed_at_interruption[cause] += count
            pipe.replaying = count
            return count
        lost = link.written - link.confirmed
        self._stats.possibly_lost[cause] += lost
        return lost

    def headers(self, pipe: Pipe) -> list[tuple[str, str]]:
        """What the next link's handshake tells its backend about the session."""
        p = self._prefix
        headers = [(p + "session", pipe.session_id), (p + "link", str(pipe.carried + 1)),
                   (p + "delivery", pipe.delivery.value), (p + "replayed", str(pipe.replaying))]
        lane = pipe.lane
        if lane.retain:
            first = lane.buffer.first_seq
            headers.append((p + "seq", str(first if first is not None else lane.next_seq)))
        return headers
