"""Keepalive: pings and pongs, hop by hop, the same for a client and for a link.

The proxy answers every ping itself and pings each of its connections every
``ping_interval``; a connection that does not answer within ``ping_timeout`` is
dead (for a link: an interruption; for a client: the session ends with 1011).

A pong deadline that passes is given :data:`~.deadlines.GRACE` once before the peer
is declared dead: the timer that fires it may run before the reads that carry the
pong (uvloop runs due timers before it polls the sockets; trio's run order is its
own), so after a stall of the proxy that ends just past the deadline, or one long
loop iteration, the pong waits unread in a socket buffer. The grace lets the driver
read once more; silence past it is death.
"""

from __future__ import annotations

from wsproto.connection import ConnectionState
from wsproto.events import Ping

from .deadlines import GRACE, overslept
from .flow import Endpoint, Flow

PING_PAYLOAD = b"wspipe"


class Keepalive:
    """Pings, pong deadlines and ping answers for endpoints."""

    #: Endpoints given a grace past their pong deadline, and when the grace ends.
    _graced: dict[Endpoint, float]

    def __init__(self, interval: float, timeout: float, flow: Flow) -> None:
        self.interval = interval
        self.timeout = timeout
        self._flow = flow
        self._graced = {}

    def start(self, ep: Endpoint, now: float) -> None:
        """``ep`` just opened: its first ping is due one interval from now."""
        ep.ping_at = now + self.interval if self.interval else None
        ep.pong_deadline = None

    def stop(self, ep: Endpoint) -> None:
        """No more pings for ``ep`` (it is closing)."""
        ep.ping_at = ep.pong_deadline = None
        if self._graced:
            self._graced.pop(ep, None)

    def answer(self, ep: Endpoint, ping: Ping) -> None:
        """Answer a ping from ``ep`` with its pong.

        A peer that pings but does not read gets no more pongs once its outbox is
        over the high-water mark (RFC 6455 5.5.3 allows answering only the latest
        ping), so a ping flood cannot grow the outbox.
        """
        if ep.ws.state is ConnectionState.OPEN and ep.pending <= self._flow.high:
            self._flow.write(ep, ep.ws.send(ping.response()))

    def pong(self, ep: Endpoint) -> None:
        """``ep`` answered: it is alive, and it read what was written before our ping."""
        ep.pong_deadline = None
        ep.confirmed = ep.ping_mark
        if self._graced:
            self._graced.pop(ep, None)

    def tick(self, ep: Endpoint, now: float) -> bool:
        """Send ``ep``'s ping if due; ``True`` if its pong is overdue (it is dead)."""
        if ep.holds:
            # Not reading it, so its pong could not be seen: keepalive waits until
            # reading resumes.
            ep.pong_deadline = None
            if ep.ping_at is not None and now >= ep.ping_at:
                ep.ping_at = now + self.interval
            return False
        deadline = ep.pong_deadline
        if deadline is not None and now >= deadline:
            graced = self._graced
            if graced.pop(ep, None) == deadline and not overslept(deadline, now):
                return True  # silent through its grace too
            # Read what may have arrived before blaming the peer (see the module): once
            # past the deadline, and again while the proxy oversleeps its deadlines.
            ep.pong_deadline = graced[ep] = now + GRACE
            if ep.ping_at is not None and now >= ep.ping_at:
                # No new ping while one is unanswered, but the next wake-up is ahead:
                # a ping time left behind would keep the timer firing.
                ep.ping_at = now + self.interval
            if len(graced) > 64:  # forget endpoints that went another way meanwhile
                for other in [e for e, when in graced.items() if e.pong_deadline != when]:
                    del graced[other]
            return False
        if ep.ping_at is not None and now >= ep.ping_at:
            ep.ping_at = now + self.interval
            if ep.pong_deadline is None and ep.ws.state is ConnectionState.OPEN:
                self.ping(ep, PING_PAYLOAD, now)
        return False

    def ping(self, ep: Endpoint, payload: bytes, now: float) -> None:
        """Send ``ep`` a ping; its pong is due within ``ping_timeout``."""
        self._flow.write(ep, ep.ws.send(Ping(payload=payload)))
        ep.ping_mark = ep.written
        if ep.pong_deadline is None and self.timeout:
            ep.pong_deadline = now + self.timeout

    @staticmethod
    def next_deadline(ep: Endpoint) -> float | None:
        """The earliest keepalive deadline of ``ep``."""
        ping, pong = ep.ping_at, ep.pong_deadline
        if ping is None:
            return pong
        return ping if pong is None or ping < pong else pong
