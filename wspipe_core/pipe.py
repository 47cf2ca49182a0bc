"""The pipe: the persistent state of one client session; it outlives its links."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wsproto.connection import Connection
from wsproto.events import BytesMessage, TextMessage

from .assembler import MessageAssembler
from .buffer import ReplayBuffer
from .codes import InterruptionCause
from .events import ConnId
from .info import PipeInfo, PipeState, RequestInfo

if TYPE_CHECKING:
    from .link import Link
    from .pool import Backend


@dataclass(eq=False)
class Pipe:
    """One client session: its client connection, buffer, current link and timers.

    Transitions (see docs/architecture.md): CONNECTING -> LINKED on the first open
    link; LINKED -> INTERRUPTED when the link is lost; INTERRUPTED -> LINKED when a
    new link opens (after the buffer is flushed to it); any -> CLOSING when the
    session ends and the client is sent a Close; CLOSING -> CLOSED when the client
    answers, hangs up or ``close_timeout`` passes.
    """

    id: str
    conn: ConnId
    client_id: str
    request: RequestInfo
    subprotocol: str | None
    #: The client's WebSocket connection (the handshake objects are dropped once open).
    ws: Connection
    since: float
    state: PipeState = PipeState.CONNECTING
    #: The live or dialing link, if any.
    link: Link | None = None
    #: The backend of the last link (for snapshots and logs).
    last_backend: Backend | None = None
    #: The backend that just failed this pipe, excluded from the next choice.
    exclude: Backend | None = None
    buffer: ReplayBuffer = field(default_factory=ReplayBuffer)
    assembler: MessageAssembler = field(default_factory=MessageAssembler)
    #: Bytes counted against the limits: buffered + in-progress client bytes.
    held: int = 0
    #: Failed link attempts in a row.
    attempts: int = 0
    interruptions: int = 0
    #: Why the current interruption began (``None`` while linked).
    cause: InterruptionCause | None = None
    #: Start of the current interruption (or of the first connect), else ``None``.
    interrupted_at: float | None = None
    #: When the next link attempt is due, if waiting.
    retry_at: float | None = None
    #: Bytes handed to the driver for the client, not yet reported written.
    pending: int = 0
    #: Reading paused because the live link's outbox is over the high-water mark.
    backpressured: bool = False
    #: Reading paused by the ``pause`` buffer policy.
    buffer_paused: bool = False
    #: When the ``pause`` policy first stopped reading (cleared once reading resumes);
    #: a pause longer than ``max_interruption`` ends the pipe with 1013.
    paused_since: float | None = None
    #: The client message (or fragment) held back by the ``pause`` policy.
    overflow: TextMessage | BytesMessage | None = None
    #: Whether the driver was told to stop reading the client.
    client_paused: bool = False
    #: Keepalive of the client connection.
    ping_at: float | None = None
    pong_deadline: float | None = None
    #: While CLOSING: when to give up waiting for the client's Close.
    close_deadline: float | None = None
    #: Messages dropped by the ``drop_oldest`` policy.
    dropped_messages: int = 0

    def next_deadline(self, max_interruption: float) -> float | None:
        if self.state is PipeState.CLOSING:
            return self.close_deadline
        times = [t for t in (self.retry_at, self.ping_at, self.pong_deadline) if t is not None]
        if self.interrupted_at is not None:
            times.append(self.interrupted_at + max_interruption)
        if self.paused_since is not None:
            times.append(self.paused_since + max_interruption)
        return min(times, default=None)

    def info(self) -> PipeInfo:
        backend = self.link.backend if self.link is not None else self.last_backend
        return PipeInfo(
            id=self.id,
            client_id=self.client_id,
            state=self.state,
            request=self.request,
            backend_id=backend.id if backend is not None else None,
            subprotocol=self.subprotocol,
            buffered_bytes=self.buffer.bytes,
            interruptions=self.interruptions,
            since=self.since,
            buffered_messages=len(self.buffer),
            attempts=self.attempts,
            retry_at=self.retry_at,
        )
