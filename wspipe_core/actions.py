"""Outputs of the core: what the driver must do, as frozen dataclasses.

Actions come back from :meth:`wspipe_core.Proxy.handle` and friends in the order
they must be executed. Per connection, order matters: ``CloseClient`` and
``CloseLink`` are executed after every ``SendTo*`` queued before them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .events import ConnId, LinkId, ProbeId, QueryId


class Action:
    """Base class of every action."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class SendToClient(Action):
    """Write ``data`` to the client; report ``ClientDataSent`` once written."""

    conn: ConnId
    data: bytes


@dataclass(frozen=True, slots=True)
class CloseClient(Action):
    """Close the client's socket after its pending data is written. The core forgot it."""

    conn: ConnId


@dataclass(frozen=True, slots=True)
class PauseClient(Action):
    """Stop reading from the client until ``ResumeClient``."""

    conn: ConnId


@dataclass(frozen=True, slots=True)
class ResumeClient(Action):
    """Read from the client again."""

    conn: ConnId


@dataclass(frozen=True, slots=True)
class OpenLink(Action):
    """Connect to a backend; report ``LinkConnected`` or ``LinkConnectFailed``.

    The core enforces the handshake timeout itself (it answers with ``CloseLink``);
    the driver may apply its own connect timeout and report it as a failure.
    """

    link: LinkId
    host: str
    port: int
    tls: bool
    #: The backend URL, for logs and for TLS server-name checks.
    url: str
    #: The TLS server name to send and verify, when not ``host`` (a discovered member
    #: is dialed by address but known by its entry's name).
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class SendToLink(Action):
    """Write ``data`` to the backend on ``link``; report ``LinkDataSent`` once written."""

    link: LinkId
    data: bytes


@dataclass(frozen=True, slots=True)
class CloseLink(Action):
    """Close the link's socket after its pending data is written. The core forgot it."""

    link: LinkId


@dataclass(frozen=True, slots=True)
class PauseLink(Action):
    """Stop reading from the link until ``ResumeLink``."""

    link: LinkId


@dataclass(frozen=True, slots=True)
class ResumeLink(Action):
    """Read from the link again."""

    link: LinkId


@dataclass(frozen=True, slots=True)
class ProbeBackend(Action):
    """Probe a backend (an active health check): connect, write ``request``, read the
    answer head and report :class:`wspipe_core.events.ProbeResult`.

    The core times the probe out itself (it answers with ``CloseProbe``); the driver
    bounds its connect by ``timeout`` too. Then it waits for ``CloseProbe``.
    """

    probe: ProbeId
    host: str
    port: int
    tls: bool
    #: The backend URL, for logs and for TLS server-name checks.
    url: str
    #: The WebSocket upgrade request to write.
    request: bytes
    #: Seconds the core gives the whole probe.
    timeout: float
    #: The TLS server name, when not ``host`` (see :class:`OpenLink`).
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class CloseProbe(Action):
    """Write ``data`` (a Close frame after a 101, else nothing) and close the probe's
    socket; cancel the probe if it is still connecting or reading."""

    probe: ProbeId
    data: bytes


@dataclass(frozen=True, slots=True)
class ResolveBackends(Action):
    """Resolve a discovered backend entry and report
    :class:`wspipe_core.events.BackendsResolved` (see :mod:`wspipe_core.discovery`).

    ``kind`` is ``a`` (A and AAAA records of ``name``; every address takes ``port``)
    or ``srv`` (SRV records of ``name``: each target's addresses with its port).
    """

    query: QueryId
    kind: str
    name: str
    port: int | None
