"""Flow control: the bytes each connection owes the driver, and when a connection is read.

The proxy speaks on two kinds of WebSocket connection, the client's and the links
to backends; to flow control both are an :class:`Endpoint`. The core counts the
bytes it handed the driver for each endpoint minus those the driver reported
written (``pending``). An endpoint whose pending bytes pass ``write_high_water`` is
*congested*, and the endpoint that feeds it — its peer, when the two are joined as
the live relay of a pipe — is no longer read until they fall to
``write_low_water``. So a slow client stops the proxy reading its backend and a
slow backend stops it reading the client; the driver's outboxes stay bounded by
the core's accounting.

Reading can be held for other reasons too (:class:`Hold`); the driver is told
``Pause*`` when the first hold starts and ``Resume*`` when the last one ends.
Pipes that the ``pause`` buffer policy stopped on the memory budget wait here for
bytes to be given back.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, ClassVar

from .actions import Action
from .assembler import MessageAssembler

if TYPE_CHECKING:
    from wsproto import WSConnection
    from wsproto.connection import Connection

    from .config import ProxyConfig
    from .wire import WireConnection


class Hold(enum.IntFlag):
    """Why an endpoint is not read."""

    #: The endpoint it feeds is congested (its outbox is over ``write_high_water``).
    BACKPRESSURE = 1
    #: The ``pause`` buffer policy stopped reading the client.
    POLICY = 2
    #: The client's upgrade is not answered yet (it waits for a backend's subprotocol).
    UPGRADE = 4


class Endpoint:
    """One WebSocket connection of the proxy: a client's, or a link to a backend.

    Subclasses say which actions carry their bytes (``SEND``, ``PAUSE``, ``RESUME``)
    and which direction their messages go (``INBOUND``: client to backend).
    """

    #: The action classes that carry its bytes and holds: ``SEND(ident, data)``,
    #: ``PAUSE(ident)``, ``RESUME(ident)``.
    SEND: ClassVar[Any]
    PAUSE: ClassVar[Any]
    RESUME: ClassVar[Any]
    #: Messages read from it go to a backend (it is a client connection).
    INBOUND: ClassVar[bool]

    __slots__ = ("assembler", "confirmed", "congested", "holds", "ident", "owner", "peer",
                 "pending", "ping_at", "ping_mark", "pong_deadline", "written", "ws")

    def __init__(self, ident: int, ws: Connection | WSConnection | WireConnection,
                 owner: Any) -> None:
        #: The id the driver knows it by (``conn`` or ``link``).
        self.ident = ident
        self.ws = ws
        #: The session it belongs to (the core's ``Pipe``).
        self.owner: Any = owner
        #: Where its messages go: for a client, its pipe's live link; for a link, its
        #: client. Both point at each other exactly while they are the live relay.
        self.peer: Endpoint | None = None
        #: Joins the fragments of the message it is sending us.
        self.assembler = MessageAssembler()
        #: Bytes handed to the driver, not yet reported written.
        self.pending = 0
        #: Whether ``pending`` passed the high-water mark (and has not fallen to low water).
        self.congested = False
        #: Why it is not read (0: it is read).
        self.holds = Hold(0)
        #: Keepalive: when the next ping is due, and when an unanswered one times out.
        self.ping_at: float | None = None
        self.pong_deadline: float | None = None
        #: Messages written to it; and, of those, how many a pong has confirmed it read
        #: (``ping_mark`` is ``written`` when the last ping was sent).
        self.written = 0
        self.ping_mark = 0
        self.confirmed = 0


class Flow:
    """Write accounting and read holds of every endpoint; collects the actions of a call."""

    def __init__(self, config: ProxyConfig) -> None:
        self.high = config.write_high_water
        self.low = config.write_low_water
        #: The actions of the call in progress, in order.
        self.out: list[Action] = []
        self._budget_waiters: dict[Any, None] = {}
        #: Whether bytes went back to the memory budget since waiters were last woken.
        self.budget_freed = False

    def write(self, ep: Endpoint, data: bytes) -> None:
        """Hand ``data`` to the driver for ``ep``; hold its feeder if it is now congested."""
        self.out.append(ep.SEND(ep.ident, data))
        ep.pending += len(data)
        if ep.pending > self.high and not ep.congested:
            ep.congested = True
            feeder = ep.peer
            if feeder is not None and feeder.peer is ep:
                self.hold(feeder, Hold.BACKPRESSURE)

    def written(self, ep: Endpoint) -> None:
        """``ep.pending`` went down (the driver wrote): read its feeder again at low water."""
        if ep.congested and ep.pending <= self.low:
            ep.congested = False
            feeder = ep.peer
            if feeder is not None and feeder.peer is ep:
                self.release(feeder, Hold.BACKPRESSURE)

    def hold(self, ep: Endpoint, reason: Hold) -> None:
        """Stop reading ``ep`` for ``reason``."""
        if not ep.holds:
            self.out.append(ep.PAUSE(ep.ident))
        ep.holds |= reason

    def release(self, ep: Endpoint, reason: Hold) -> None:
        """``reason`` no longer holds ``ep``; read it again once nothing does."""
        if ep.holds & reason:
            ep.holds &= ~reason
            if not ep.holds:
                self.out.append(ep.RESUME(ep.ident))

    def join(self, client: Endpoint, link: Endpoint) -> None:
        """Make ``client`` and ``link`` the live relay: each feeds the other."""
        client.peer = link
        link.peer = client
        if client.congested:
            self.hold(link, Hold.BACKPRESSURE)
        if link.congested:
            self.hold(client, Hold.BACKPRESSURE)

    def part(self, client: Endpoint, link: Endpoint) -> None:
        """End the live relay of ``client`` and ``link``.

        The link keeps ``client`` as its peer: what the backend wrote before a Close
        still goes to the client. Neither holds the other back any more.
        """
        if client.peer is link:
            client.peer = None
        self.release(link, Hold.BACKPRESSURE)
        self.release(client, Hold.BACKPRESSURE)

    # Pipes paused by the ``pause`` policy because the memory budget was full.

    def wait_for_budget(self, pipe: Any) -> None:
        """Wake ``pipe`` when bytes are next given back to the memory budget."""
        self._budget_waiters[pipe] = None

    def forget_waiter(self, pipe: Any) -> None:
        self._budget_waiters.pop(pipe, None)

    def take_budget_waiters(self) -> list[Any]:
        """The pipes to wake because bytes were given back (each waits again if need be)."""
        freed, self.budget_freed = self.budget_freed, False
        if not freed or not self._budget_waiters:
            return []
        waiters, self._budget_waiters = list(self._budget_waiters), {}
        return waiters

    @property
    def budget_waiters(self) -> int:
        """Pipes waiting for the memory budget."""
        return len(self._budget_waiters)
