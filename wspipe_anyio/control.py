"""The control interface of a running proxy: what an operator's tools read and change.

:class:`ProxyControl` is what the admin API (and later a status page or a fleet
store) drives. :class:`wspipe_anyio.ProxyServer` implements it itself; tests may
implement it over :class:`wspipe_core.testing.Harness`. Every method is
synchronous and called from the event loop the proxy runs on; each one that
changes the proxy executes the actions the core returned before it returns.
"""

from __future__ import annotations

from typing import Any, Protocol

from wspipe_core import BackendHealth, BackendInfo, MigrationInfo, PipeInfo, ProxyConfig
from wspipe_core.buffer import MemoryBudget
from wspipe_core.stats import Stats


class Exposition(Protocol):
    """Metrics that can be rendered for a scrape (:class:`wspipe_anyio.metrics.Metrics`)."""

    def exposition(self, accept: bytes | None = None) -> tuple[bytes, str]:
        """The metrics in the format the ``Accept`` header asks for: (body, content type)."""
        ...


class ProxyControl(Protocol):
    """Read and change a running proxy: its pool, its pipes and their migration."""

    @property
    def config(self) -> ProxyConfig:
        """The proxy's configuration (``migrate_rate``, ``max_connections``, ...)."""
        ...

    @property
    def stats(self) -> Stats:
        """The core's counters since start."""
        ...

    @property
    def budget(self) -> MemoryBudget:
        """The process-wide memory budget of the buffers (``used``, ``high_water``, ``limit``)."""
        ...

    @property
    def connections(self) -> int:
        """Client connections, handshaking or open."""
        ...

    @property
    def stopping(self) -> bool:
        """Whether the proxy has begun shutting down (it accepts no client any more)."""
        ...

    @property
    def metrics(self) -> Exposition:
        """The proxy's Prometheus metrics, living as long as the proxy."""
        ...

    def now(self) -> float:
        """The core's clock now (monotonic seconds), the time base of ``PipeInfo.since``."""
        ...

    def backends(self) -> list[BackendInfo]:
        """Snapshots of the pool, in registration order."""
        ...

    def pipes(self) -> list[PipeInfo]:
        """Snapshots of the live pipes."""
        ...

    def backend_health(self) -> list[BackendHealth]:
        """The health of every backend (ejection end, last and next health check)."""
        ...

    def migrations(self) -> list[MigrationInfo]:
        """The drains with migrate under way, one per draining backend."""
        ...

    def queued_bytes(self) -> int:
        """Bytes the core asked to send that are not written to a socket yet (all outboxes)."""
        ...

    def fleet(self) -> dict[str, Any]:
        """The fleet as ``GET /fleet`` shows it: ``instance``, ``store`` (``up``, ``down``
        or ``None`` without one), ``members`` and ``instances`` (each one's description)."""
        ...

    def add_backend(self, url: str, *, weight: float = 1.0) -> BackendInfo:
        """Register a backend; pipes waiting for one retry now.

        :raises InvalidBackendURL: Not a ``ws://``/``wss://`` URL, or a bad weight.
        :raises BackendNotAllowed: Its host is not on ``backend_allow``.
        :raises BackendAlreadyRegistered: The URL is in the pool already.
        """
        ...

    def remove_backend(self, id_or_url: str, *, migrate: bool = False) -> None:
        """Drain a backend; with ``migrate`` its pipes move at ``config.migrate_rate``/s.

        :raises UnknownBackend: No backend with that id or URL.
        """
        ...

    def migrate_pipe(self, pipe_id: str) -> None:
        """Move one pipe to another backend now (its buffer is replayed there)."""
        ...
