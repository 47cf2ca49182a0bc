"""Inputs to the core: facts the driver observed, as frozen dataclasses.

The driver feeds each one to :meth:`wspipe_core.Proxy.handle` together with the
current monotonic time. Client connections are named by a ``conn`` id the driver
chooses (any int unique among live connections); links are named by the ``link``
id the core chose in :class:`wspipe_core.actions.OpenLink`. Events about ids the
core no longer knows are ignored, so the driver never has to track lifetimes.
"""

from __future__ import annotations

from dataclasses import dataclass

ConnId = int
LinkId = int
ProbeId = int
QueryId = int


class Event:
    """Base class of every input event."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ClientConnected(Event):
    """A client TCP (or TLS) connection was accepted on the listener."""

    conn: ConnId
    #: The peer address as text (IP without port), for ``X-Forwarded-For`` and logs.
    peer: str = ""
    #: Whether the client connection is TLS (``wss://``).
    tls: bool = False


@dataclass(frozen=True, slots=True)
class ClientDataReceived(Event):
    """Bytes arrived from a client."""

    conn: ConnId
    data: bytes


@dataclass(frozen=True, slots=True)
class ClientEOF(Event):
    """The client's socket reached EOF or failed (reset, TLS error)."""

    conn: ConnId


@dataclass(frozen=True, slots=True)
class ClientDataSent(Event):
    """The driver finished writing ``nbytes`` of earlier ``SendToClient`` data."""

    conn: ConnId
    nbytes: int


@dataclass(frozen=True, slots=True)
class LinkConnected(Event):
    """The TCP (and TLS) connection of a link is up; the core now sends its handshake."""

    link: LinkId


@dataclass(frozen=True, slots=True)
class LinkConnectFailed(Event):
    """A link could not be connected (DNS, refused, timeout, TLS); ``error`` says why."""

    link: LinkId
    error: str


@dataclass(frozen=True, slots=True)
class LinkDataReceived(Event):
    """Bytes arrived from a backend on a link."""

    link: LinkId
    data: bytes


@dataclass(frozen=True, slots=True)
class LinkEOF(Event):
    """A link's socket reached EOF or failed (reset, TLS error)."""

    link: LinkId
    error: str = "connection closed by backend"


@dataclass(frozen=True, slots=True)
class LinkDataSent(Event):
    """The driver finished writing ``nbytes`` of earlier ``SendToLink`` data."""

    link: LinkId
    nbytes: int


@dataclass(frozen=True, slots=True)
class ProbeResult(Event):
    """A health-check probe (:class:`wspipe_core.actions.ProbeBackend`) ended.

    ``data`` is what the backend answered, up to the end of its response head (at
    most 16 KiB; empty if nothing came); ``error`` says why there is no answer
    (connect refused, reset, TLS failure), else ``None``. The core reads ``data``.
    """

    probe: ProbeId
    data: bytes = b""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BackendsResolved(Event):
    """A :class:`wspipe_core.actions.ResolveBackends` query ended: the ``(host, port)``
    addresses it found, or ``error`` saying why there are none."""

    query: QueryId
    addresses: tuple[tuple[str, int], ...] = ()
    error: str | None = None
