"""A link: one backend WebSocket connection of a pipe, as a wsproto client."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection

from .assembler import MessageAssembler
from .events import LinkId

if TYPE_CHECKING:
    from .pipe import Pipe
    from .pool import Backend


class LinkState(enum.Enum):
    """The state of a link."""

    #: ``OpenLink`` was sent; waiting for ``LinkConnected``.
    DIALING = "dialing"
    #: The upgrade request was sent; waiting for the backend's answer.
    HANDSHAKING = "handshaking"
    #: Messages flow. Only an open link that is its pipe's ``link`` is live.
    OPEN = "open"
    #: A Close was sent or received; waiting for the close handshake to finish.
    CLOSING = "closing"


@dataclass(eq=False)
class Link:
    """One backend connection; belongs to at most one pipe."""

    id: LinkId
    backend: Backend
    pipe: Pipe | None
    #: Handshake deadline while dialing/handshaking; close deadline while closing.
    deadline: float
    state: LinkState = LinkState.DIALING
    #: The handshake-capable connection until open, then only its ``Connection``
    #: (wsproto keeps ~5 KiB of handshake state we no longer need).
    ws: WSConnection | Connection = field(
        default_factory=lambda: WSConnection(ConnectionType.CLIENT))
    assembler: MessageAssembler = field(default_factory=MessageAssembler)
    #: Bytes handed to the driver and not yet reported written.
    pending: int = 0
    #: Whether we told the driver to stop reading this link.
    paused: bool = False
    #: When the next keepalive ping is due (open links).
    ping_at: float | None = None
    #: When an unanswered ping times out.
    pong_deadline: float | None = None
    #: Whether the backend has shown it works: a message or a pong came back. Only
    #: then does the link count as a success for the pool (a backend that accepts the
    #: upgrade and fails at once must still be ejected).
    proven: bool = False

    def next_deadline(self) -> float | None:
        if self.state is LinkState.OPEN:
            times = [t for t in (self.ping_at, self.pong_deadline) if t is not None]
            return min(times, default=None)
        return self.deadline
