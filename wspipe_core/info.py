"""Read-only snapshots and small value types handed to and returned by hooks."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from .codes import InterruptionCause


class BackendState(enum.Enum):
    """The state of a backend in the pool."""

    #: Eligible for new pipes.
    UP = "up"
    #: Failed ``eject_after`` times in a row; skipped until its cool-down ends, then probed.
    EJECTED = "ejected"
    #: Takes no new pipes; its pipes stay (or migrate) until it is empty and removed.
    DRAINING = "draining"


class PipeState(enum.Enum):
    """The state of a pipe (see docs/architecture.md for the diagram)."""

    #: The client was accepted; the first link is being established.
    CONNECTING = "connecting"
    #: A link is open; messages flow both ways.
    LINKED = "linked"
    #: The link was lost; client messages are buffered while a new link is sought.
    INTERRUPTED = "interrupted"
    #: The pipe sent the client a Close and waits for its answer.
    CLOSING = "closing"
    #: The pipe has ended.
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The client's upgrade request."""

    #: The request target as sent: path plus optional ``?query``.
    target: str
    #: The path part of ``target``.
    path: str
    #: The query part of ``target``, without ``?`` (empty if none).
    query: str
    #: Request headers, names lower-cased, in order (``Host`` and WebSocket keys included).
    headers: tuple[tuple[str, str], ...]
    #: Subprotocols the client offered, in order.
    subprotocols: tuple[str, ...]
    #: The client's address (IP), as the driver reported it.
    peer: str
    #: Whether the client connected over TLS.
    tls: bool

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """A backend in the pool, as of the moment of the hook call."""

    #: Short stable id, e.g. ``b1``.
    id: str
    #: The backend URL as registered.
    url: str
    state: BackendState
    #: Pipes assigned to this backend (linked or dialing).
    pipes: int
    #: Errors recorded in total.
    errors: int
    #: Failures in a row since the last success.
    consecutive_failures: int
    #: Relative weight given at registration (default 1).
    weight: float


@dataclass(frozen=True, slots=True)
class PipeInfo:
    """A pipe, as of the moment of the hook call."""

    #: Process-unique pipe id, e.g. ``p17``.
    id: str
    client_id: str
    state: PipeState
    request: RequestInfo
    #: The id of the backend of the current (or last) link, if any.
    backend_id: str | None
    #: The subprotocol agreed with the client, if any.
    subprotocol: str | None
    #: Bytes of client messages held in the buffer.
    buffered_bytes: int
    #: Interruptions so far.
    interruptions: int
    #: Monotonic time the pipe was opened.
    since: float
    #: Client messages held in the buffer.
    buffered_messages: int = 0
    #: Failed link attempts in a row (0 once linked).
    attempts: int = 0
    #: When the next link attempt is due, while the pipe waits out a backoff.
    retry_at: float | None = None
    #: Its delivery mode (``at-most-once``, ``at-least-once``, ``acked``).
    delivery: str = "at-most-once"
    #: Client messages written to the link and not confirmed yet (retained), and their
    #: payload bytes.
    unconfirmed_messages: int = 0
    unconfirmed_bytes: int = 0
    #: The session id every backend that carries the pipe is told.
    session_id: str = ""
    #: While its client is away (parked): when the session ends unless it comes back.
    parked_until: float | None = None
    #: Backend messages held for the client while it is away.
    held_for_client: int = 0


@dataclass(frozen=True, slots=True)
class Reject:
    """A refusal of a client's upgrade: HTTP ``status`` with one-line ``reason`` as body."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class Accept:
    """An authenticated client: ``principal`` names who it is (e.g. a JWT subject).

    A parked session is resumed only by a connection of the same principal.
    """

    principal: str


class BufferFullAction(enum.Enum):
    """What to do with a message that does not fit in a pipe's buffer."""

    #: Close the client with 1013 "buffer limit reached" (the default).
    CLOSE = "close"
    #: Keep the message, stop reading the client until the buffer drains (TCP backpressure).
    PAUSE = "pause"
    #: Drop the oldest buffered messages until the new one fits; count what was dropped.
    DROP_OLDEST = "drop_oldest"


@dataclass(frozen=True, slots=True)
class BackendRequest:
    """The handshake a link sends to its backend; a hook may return a changed copy."""

    #: Request target (path and query).
    target: str
    #: Extra request headers (names lower-case), besides Host and the WebSocket keys.
    headers: tuple[tuple[str, str], ...]
    #: The subprotocols offered to the backend, in the client's order (empty: none).
    subprotocols: tuple[str, ...] = ()


class PipeEventKind(enum.Enum):
    """What happened to a pipe, for ``wspipe_pipe_event``."""

    OPENED = "opened"
    LINKED = "linked"
    INTERRUPTED = "interrupted"
    RESUMED = "resumed"
    #: The client vanished without a Close; the session waits ``resume_window`` for it.
    PARKED = "parked"
    #: A new connection with the same client id took the session over (``duration``:
    #: the time the client was away).
    CLIENT_RESUMED = "client_resumed"
    #: The client did not come back within ``resume_window`` (a ``closed`` follows).
    EXPIRED = "expired"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class PipeEvent:
    """One observation about a pipe: opened, linked, interrupted, resumed or closed."""

    kind: PipeEventKind
    pipe: PipeInfo
    #: The backend concerned (the new one for ``linked``/``resumed``, the lost one for
    #: ``interrupted``), if any.
    backend: BackendInfo | None
    #: Monotonic time of the event.
    now: float
    #: Why: interruption cause, or close reason.
    reason: str = ""
    #: The close code sent to the client for ``closed``; else ``None``.
    code: int | None = None
    #: For ``resumed``: seconds since the interruption; else ``None``.
    duration: float | None = None
    #: Free-form numbers (e.g. ``dropped_messages``).
    extra: Mapping[str, float] = field(default_factory=dict)
    #: Why the link was lost: set on ``interrupted``, on the ``resumed`` that ends that
    #: interruption, and on a ``closed`` that ends the pipe while it was interrupted.
    cause: InterruptionCause | None = None


@dataclass(frozen=True, slots=True)
class MigrationInfo:
    """A drain with migrate under way: the pipes of one backend being moved to others."""

    #: The draining backend.
    backend_id: str
    #: Pipes that were on it when the migration started.
    total: int
    #: Pipes moved so far.
    moved: int
    #: Pipes still queued (some may end or fail over before their turn).
    remaining: int
    #: Monotonic time the migration started.
    started: float
    #: Whether it waits because no other backend is up (pipes never move to nowhere).
    waiting: bool
