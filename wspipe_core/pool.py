"""The pool of backends: registration, health (ejection, cool-down, probe), draining."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .allowlist import BackendAllowList
from .config import ProxyConfig
from .errors import BackendAlreadyRegistered, BackendNotAllowed, InvalidBackendURL, UnknownBackend
from .info import BackendInfo, BackendState

log = logging.getLogger("wspipe.pool")


@dataclass(frozen=True, slots=True)
class BackendAddress:
    """Where a backend URL points."""

    host: str
    port: int
    tls: bool
    #: Path and query of the URL (``/`` when empty).
    target: str
    #: The name a discovered member is known by (its entry's DNS name): the TLS server
    #: name and the ``Host`` header, while :attr:`host` is the address dialed.
    server_name: str | None = None

    @property
    def host_header(self) -> str:
        host = self.server_name or (f"[{self.host}]" if ":" in self.host else self.host)
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_backend_url(url: str) -> BackendAddress:
    """Parse a ``ws://`` or ``wss://`` URL; raise :class:`InvalidBackendURL` saying why."""
    if not isinstance(url, str) or not url or url != url.strip():
        raise InvalidBackendURL(f"invalid backend URL {url!r}")
    if not url.isascii() or not url.isprintable() or " " in url:
        # The path goes into the request line as it is: it must be percent-encoded.
        raise InvalidBackendURL(
            f"invalid backend URL {url!r}: spaces, control or non-ASCII characters "
            "must be percent-encoded")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidBackendURL(f"invalid backend URL {url!r}: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise InvalidBackendURL(f"invalid backend URL {url!r}: scheme must be ws or wss")
    if not parts.hostname:
        raise InvalidBackendURL(f"invalid backend URL {url!r}: no host")
    if parts.username or parts.password or parts.fragment:
        raise InvalidBackendURL(f"invalid backend URL {url!r}: no credentials or fragment")
    tls = parts.scheme == "wss"
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return BackendAddress(parts.hostname, port or (443 if tls else 80), tls, target)


@dataclass(slots=True, eq=False)
class Backend:
    """One backend and its health; owned by the :class:`Pool`."""

    id: str
    url: str
    address: BackendAddress
    weight: float = 1.0
    state: BackendState = BackendState.UP
    pipes: int = 0
    errors: int = 0
    consecutive_failures: int = 0
    #: Ejections in a row (sets the next cool-down); reset by a success.
    ejections: int = 0
    ejected_until: float = 0.0
    #: Whether the backend is still in the pool.
    registered: bool = True
    #: Pipe ids waiting to be migrated off this backend.
    to_migrate: list[str] = field(default_factory=list)

    def info(self) -> BackendInfo:
        return BackendInfo(self.id, self.url, self.state, self.pipes, self.errors,
                           self.consecutive_failures, self.weight)


class Pool:
    """Backends by id, in registration order, with their health."""

    def __init__(self, config: ProxyConfig) -> None:
        self._config = config
        self._allow = BackendAllowList.parse(config.backend_allow)
        self._backends: dict[str, Backend] = {}
        self._next_id = 1
        #: Set when an ejection starts or ends: the owner re-reads :meth:`next_deadline`.
        self.changed = False

    def __iter__(self) -> Iterator[Backend]:
        return iter(list(self._backends.values()))

    def __len__(self) -> int:
        return len(self._backends)

    def add(self, url: str, weight: float = 1.0, server_name: str | None = None) -> Backend:
        """Register ``url``; registering a URL twice is an error (as in the original).

        :raises InvalidBackendURL: not a backend URL, or a bad weight.
        :raises BackendNotAllowed: its host is not on ``backend_allow``.
        :raises BackendAlreadyRegistered: it points where a registered backend does.
        """
        address = parse_backend_url(url)
        if server_name is not None:  # a discovered member: dialed by address, known by name
            address = dataclasses.replace(address, server_name=server_name)
        if not self._allow.allows(address.host):
            raise BackendNotAllowed(
                f"backend {url}: host {address.host!r} is not on backend_allow")
        if (not isinstance(weight, int | float) or isinstance(weight, bool)
                or not math.isfinite(weight) or weight <= 0):
            raise InvalidBackendURL(
                f"invalid weight {weight!r} for {url}: must be a finite number > 0")
        same = next((b for b in self._backends.values()
                     if b.url == url or b.address == address), None)
        if same is not None:
            # ws://h and ws://h:80/ are the same backend: compare where they point.
            raise BackendAlreadyRegistered(
                f"backend {url} is already registered (as {same.id}, {same.url})")
        backend = Backend(f"b{self._next_id}", url, address, float(weight))
        self._next_id += 1
        self._backends[backend.id] = backend
        log.info("backend %s registered: %s", backend.id, url)
        return backend

    def get(self, id_or_url: str) -> Backend:
        """The backend with this id or URL; raise :class:`UnknownBackend`."""
        backend = self._backends.get(id_or_url)
        if backend is None:
            backend = next((b for b in self._backends.values() if b.url == id_or_url), None)
        if backend is None:
            raise UnknownBackend(f"no backend {id_or_url!r} in the pool")
        return backend

    def remove(self, backend: Backend, why: str) -> None:
        if self._backends.pop(backend.id, None) is not None:
            backend.registered = False
            log.info("backend %s removed (%s): %s", backend.id, why, backend.url)

    def refresh(self, now: float) -> None:
        """Return ejected backends whose cool-down has ended to ``up`` (to be probed)."""
        for backend in self._backends.values():
            if backend.state is BackendState.EJECTED and now >= backend.ejected_until:
                backend.state = BackendState.UP
                self.changed = True
                log.info("backend %s cool-down over; probing it", backend.id)

    def candidates(self, now: float, exclude: Backend | None,
                   never: Collection[Backend] = ()) -> list[Backend]:
        """Backends that may take a new pipe: ``up`` ones, else (outage) ``ejected`` ones."""
        self.refresh(now)
        backends = [b for b in self._backends.values() if b is not exclude and b not in never]
        up = [b for b in backends if b.state is BackendState.UP]
        return up or [b for b in backends if b.state is BackendState.EJECTED]

    def choose(self, now: float, exclude: Backend | None,
               select: Callable[[list[BackendInfo]], BackendInfo | None], *,
               never: Collection[Backend] = ()) -> Backend | None:
        """The backend for a pipe's next link, chosen by ``select`` (the strategy hook).

        ``exclude`` (the backend that just failed the pipe) is left out, unless it is
        the only candidate: then it is tried again rather than waiting a backoff for
        nothing (the failure already cost one when it dialed). ``never`` are left out
        in any case.
        """
        candidates = self.candidates(now, exclude, never)
        if not candidates and exclude is not None:
            candidates = self.candidates(now, None, never)
        if not candidates:
            return None
        info = select([b.info() for b in candidates])
        if info is None:
            return None
        return next(b for b in candidates if b.id == info.id)

    def next_deadline(self) -> float | None:
        """When the next ejected backend's cool-down ends."""
        times = [b.ejected_until for b in self._backends.values()
                 if b.state is BackendState.EJECTED]
        return min(times, default=None)

    def record_success(self, backend: Backend) -> None:
        backend.consecutive_failures = 0
        backend.ejections = 0
        if backend.state is BackendState.EJECTED:
            backend.state = BackendState.UP
            self.changed = True

    def record_failure(self, backend: Backend, now: float, why: str, *,
                       eject: bool = False) -> None:
        """Count an error; eject after ``eject_after`` in a row (or at once with ``eject``,
        for a backend that did not answer at all); remove at ``max_errors``."""
        backend.errors += 1
        backend.consecutive_failures += 1
        if not backend.registered:
            return
        cfg = self._config
        if cfg.max_errors is not None and backend.errors >= cfg.max_errors:
            self.remove(backend, f"{backend.errors} errors reached max_errors")
            return
        if backend.state is BackendState.UP and (
                eject or backend.consecutive_failures >= cfg.eject_after):
            cooldown = min(cfg.eject_max, cfg.eject_base * 2 ** min(backend.ejections, 32))
            backend.ejections += 1
            backend.state = BackendState.EJECTED
            backend.ejected_until = now + cooldown
            self.changed = True
            log.warning("backend %s ejected for %.1fs after %d failures in a row (last: %s)",
                        backend.id, cooldown, backend.consecutive_failures, why)

    def hold_ejected(self, backend: Backend, until: float) -> None:
        """Keep an ejected ``backend`` out at least until ``until`` (its health checks
        still fail: see :mod:`.health`)."""
        if backend.state is BackendState.EJECTED and until > backend.ejected_until:
            backend.ejected_until = until
            self.changed = True

    def drain(self, backend: Backend) -> None:
        """Take no new pipes on ``backend``; it leaves the pool once empty."""
        backend.state = BackendState.DRAINING
        log.info("backend %s draining (%d pipes)", backend.id, backend.pipes)
        self.remove_if_drained(backend)

    def remove_if_drained(self, backend: Backend) -> None:
        if backend.state is BackendState.DRAINING and backend.pipes == 0:
            self.remove(backend, "drained")
