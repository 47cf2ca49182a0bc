"""The pipe: the persistent state of one client session; it outlives its links.

Only data lives here; every change of a pipe's state is made in
:mod:`wspipe_core.session`.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsproto import WSConnection

from .actions import PauseClient, ResumeClient, SendToClient
from .codes import Delivery, InterruptionCause
from .events import ConnId
from .flow import Endpoint
from .info import PipeInfo, PipeState, RequestInfo
from .keepalive import Keepalive
from .link import Link
from .pool import Backend
from .relay import Lane


class ClientConn(Endpoint):
    """The client's WebSocket connection of a pipe."""

    SEND = SendToClient
    PAUSE = PauseClient
    RESUME = ResumeClient
    INBOUND = True

    __slots__ = ()


@dataclass(eq=False)
class Pipe:
    """One client session: its client connection, buffer, current link and timers."""

    id: str
    client_id: str
    request: RequestInfo
    #: The subprotocol the client got (``None`` until answered, or none agreed).
    subprotocol: str | None
    since: float
    client: ClientConn
    #: Client messages waiting for a link (the buffer), and their cost.
    lane: Lane
    #: Backend messages held for the client while it is away (parked).
    outbound: Lane
    #: ``max_interruption``: how long the pipe may go without a link or stay paused.
    patience: float
    #: Who the auth hook said the client is, if it said (a resume must be the same).
    principal: str | None = None
    #: While the client is away (parked): since when, and until when it may come back.
    away_since: float | None = None
    parked_until: float | None = None
    #: What it promises for client messages across an interruption.
    delivery: Delivery = Delivery.AT_MOST_ONCE
    #: A stable id of the session, told to every backend that carries it.
    session_id: str = ""
    #: Links that have carried the pipe so far (the next one is number ``carried + 1``).
    carried: int = 0
    #: Unconfirmed messages put back at the last interruption: the next backend may see
    #: them a second time.
    replaying: int = 0
    state: PipeState = PipeState.CONNECTING
    #: The subprotocols the client offered that the configuration allows.
    offered: tuple[str, ...] = ()
    #: Whether the client's upgrade was answered (101); until then it waits for the
    #: first backend to choose among ``offered``, until ``answer_by``.
    answered: bool = False
    answer_by: float | None = None
    #: The server side of the client's handshake, until answered.
    upgrade: WSConnection | None = None
    #: Frames the client sent with its request, read once it is answered.
    early: bytes = b""
    #: Backends that chose another subprotocol than the client's: never this pipe's.
    incompatible: frozenset[Backend] = frozenset()
    #: The live or dialing link, if any.
    link: Link | None = None
    #: A second link dialed while ``link`` is slow to open; the first to open wins.
    racer: Link | None = None
    #: When to dial a racer, while ``link`` is dialing.
    race_at: float | None = None
    #: The backend of the last link (for snapshots and logs).
    last_backend: Backend | None = None
    #: The backend that just failed this pipe, excluded from the next choice.
    exclude: Backend | None = None
    #: Failed link attempts in a row.
    attempts: int = 0
    interruptions: int = 0
    #: Why the current interruption began (``None`` while linked).
    cause: InterruptionCause | None = None
    #: Start of the current interruption (or of the first connect), else ``None``.
    interrupted_at: float | None = None
    #: When the next link attempt is due, if waiting out a backoff.
    retry_at: float | None = None
    #: While CLOSING: when to give up waiting for the client's Close.
    close_deadline: float | None = None

    @property
    def conn(self) -> ConnId:
        return self.client.ident

    def next_deadline(self) -> float | None:
        """When this pipe must next be woken."""
        if self.state is PipeState.CLOSING:
            return self.close_deadline
        when = Keepalive.next_deadline(self.client)
        for t in (self.retry_at, self.race_at, self.answer_by, self.parked_until):
            if t is not None and (when is None or t < when):
                when = t
        for start in (self.interrupted_at, self.lane.paused_since):
            if start is not None and (when is None or start + self.patience < when):
                when = start + self.patience
        return when

    def info(self) -> PipeInfo:
        """The hook-facing snapshot of this pipe."""
        backend = self.link.backend if self.link is not None else self.last_backend
        buffer = self.lane.buffer
        return PipeInfo(self.id, self.client_id, self.state, self.request,
                        backend.id if backend is not None else None, self.subprotocol,
                        buffer.bytes, self.interruptions, self.since, len(buffer),
                        self.attempts, self.retry_at, self.delivery.value,
                        len(self.lane.retained), self.lane.retained.bytes, self.session_id,
                        self.parked_until, len(self.outbound.buffer))


