"""Active health checks: a WebSocket handshake to each backend every interval, on the core's clock.

With ``health_check_interval`` > 0, every backend that is ``up`` or ``ejected`` gets a
probe: the core emits :class:`~wspipe_core.actions.ProbeBackend` with the upgrade
request it built (wsproto), the driver connects, writes it, reads the answer head
and reports :class:`~wspipe_core.events.ProbeResult`; the core reads the answer
(wsproto again: a 101 must carry the right ``Sec-WebSocket-Accept``) and ends the
probe with :class:`~wspipe_core.actions.CloseProbe` (after a 101, with a Close
frame, so the backend sees a clean close rather than a reset). No answer within
``health_check_timeout`` is a failure too.

What a result does to the pool (the same health as passive checks, :mod:`.pool`):

- a success makes the backend ``up`` at once, ending an ejection, and resets its
  failure count (as a link that proves itself does);
- a failure counts as an error of the backend, like a failed link: ``eject_after``
  in a row eject it, a timeout ejects it at once, ``max_errors`` removes it;
- while probes fail, an ejected backend stays ejected (each failure holds the
  ejection until the next probe has had its time), so readiness does not flap to
  ``up`` at the end of a cool-down while the backend is still down.

Draining backends are not probed: they take no new pipes whatever their health.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, RejectConnection, Request
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .actions import Action, CloseProbe, ProbeBackend
from .config import ProxyConfig
from .events import ProbeId, ProbeResult
from .info import BackendState
from .pool import Backend, Pool

log = logging.getLogger("wspipe.pool")

#: Close code and reason the probe sends after a 101 (a normal closure).
PROBE_CLOSE_CODE = 1000
PROBE_CLOSE_REASON = "wspipe health check"
#: User-Agent of the probe request, so that backends can tell probes from clients.
PROBE_USER_AGENT = "wspipe-health-check"


@dataclass(frozen=True, slots=True)
class BackendHealth:
    """The health of one backend as the console shows it (times are the core's clock)."""

    backend_id: str
    state: BackendState
    #: When the ejection ends (``None`` unless ``ejected``).
    ejected_until: float | None
    #: Failures in a row since the last success (passive and active).
    consecutive_failures: int
    #: Probes completed, and how many of them failed (0 with active checks off).
    checks: int
    check_failures: int
    #: When the last probe completed, whether it passed and what it found
    #: (``"101"``, ``"HTTP 503"``, ``"timed out after 2s"``, ``"connection refused"``).
    last_check: float | None
    last_ok: bool | None
    last_result: str
    #: When the next probe starts (``None``: active checks off, or draining).
    next_check: float | None


@dataclass(eq=False, slots=True)
class _Probe:
    id: ProbeId
    backend: Backend
    ws: WSConnection
    started: float
    deadline: float


@dataclass(eq=False, slots=True)
class _Schedule:
    #: ``-inf`` until the first probe: due at the first timer call.
    next_at: float = -math.inf
    probe: _Probe | None = None
    checks: int = 0
    failures: int = 0
    last_at: float | None = None
    last_ok: bool | None = None
    last_result: str = ""
    #: A failure was logged at WARNING since the last success (later ones at DEBUG).
    warned: bool = False


@dataclass(eq=False)
class HealthChecks:
    """The probe schedule of the pool's backends; one entry in the core's timers."""

    config: ProxyConfig
    pool: Pool
    _schedules: dict[Backend, _Schedule] = field(default_factory=dict)
    _probes: dict[ProbeId, _Probe] = field(default_factory=dict)
    _next_id: int = 1
    _stopped: bool = False

    @property
    def enabled(self) -> bool:
        """Whether active health checks are on (``health_check_interval`` > 0) and the
        proxy is not shutting down."""
        return self.config.health_check_interval > 0 and not self._stopped

    def shutdown(self) -> list[Action]:
        """Start no probe any more; close those in flight."""
        self._stopped = True
        out: list[Action] = [CloseProbe(probe_id, b"") for probe_id in self._probes]
        self._probes.clear()
        for schedule in self._schedules.values():
            schedule.probe = None
        return out

    def _probed(self) -> list[Backend]:
        """Registered backends that get probes, in registration order; forgets the rest."""
        backends = [b for b in self.pool if b.state is not BackendState.DRAINING]
        for gone in set(self._schedules) - set(backends):
            del self._schedules[gone]
        return backends

    def next_deadline(self) -> float | None:
        """The next probe to start or to time out, or ``None``."""
        if not self.enabled:
            return None
        times = [p.deadline for p in self._probes.values()]
        for backend in self._probed():
            schedule = self._schedules.setdefault(backend, _Schedule())
            if schedule.probe is None:
                times.append(schedule.next_at)
        return min(times, default=None)

    def fire(self, now: float) -> list[Action]:
        """Time out late probes, then start every probe that is due."""
        out: list[Action] = []
        if not self.enabled:
            return out
        for probe in [p for p in self._probes.values() if p.deadline <= now]:
            timeout = self.config.health_check_timeout
            self._failed(probe, now, f"timed out after {timeout:g}s", timed_out=True)
            out.append(CloseProbe(probe.id, b""))
        for backend in self._probed():
            schedule = self._schedules.setdefault(backend, _Schedule())
            if schedule.probe is None and schedule.next_at <= now:
                out.append(self._start(backend, schedule, now))
        return out

    def _start(self, backend: Backend, schedule: _Schedule, now: float) -> ProbeBackend:
        cfg = self.config
        address = backend.address
        target = cfg.health_check_path if cfg.health_check_path is not None \
            else address.target
        ws = WSConnection(ConnectionType.CLIENT)
        request = ws.send(Request(
            host=address.host_header, target=target,
            extra_headers=[(b"user-agent", PROBE_USER_AGENT.encode()),
                           (f"{cfg.session_header_prefix}health-check".encode(), b"1")]))
        probe = _Probe(self._next_id, backend, ws, now, now + cfg.health_check_timeout)
        self._next_id += 1
        self._probes[probe.id] = probe
        schedule.probe = probe
        schedule.next_at = now + cfg.health_check_interval
        return ProbeBackend(probe.id, address.host, address.port, address.tls, backend.url,
                            request, cfg.health_check_timeout, address.server_name)

    def result(self, event: ProbeResult, now: float) -> list[Action]:
        """Read what the driver found; record a success or a failure on the pool."""
        probe = self._probes.get(event.probe)
        if probe is None:
            return []  # timed out already (and closed), or its backend left
        if event.error is not None:
            self._failed(probe, now, event.error)
            return [CloseProbe(probe.id, b"")]
        status, why, goodbye = self._read(probe.ws, event.data)
        if status is not None and status == self.config.health_check_status:
            self._succeeded(probe, now, str(status))
        else:
            expected = self.config.health_check_status
            self._failed(probe, now, why if status is None
                         else f"HTTP {status}, expected {expected}")
        return [CloseProbe(probe.id, goodbye)]

    @staticmethod
    def _read(ws: WSConnection, data: bytes) -> tuple[int | None, str, bytes]:
        """(status, why not, bytes to send back) of an answer head."""
        if not data:
            return None, "connection closed before a complete answer", b""
        try:
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    goodbye = ws.send(CloseConnection(code=PROBE_CLOSE_CODE,
                                                      reason=PROBE_CLOSE_REASON))
                    return 101, "", goodbye
                if isinstance(event, RejectConnection):
                    return event.status_code, "", b""
        except (RemoteProtocolError, LocalProtocolError) as exc:
            return None, f"bad answer to the upgrade: {exc}", b""
        return None, "incomplete answer to the upgrade", b""

    def _done(self, probe: _Probe, now: float, ok: bool, result: str) -> _Schedule | None:
        del self._probes[probe.id]
        schedule = self._schedules.get(probe.backend)
        if schedule is None or schedule.probe is not probe:
            return None  # the backend left the pool or began draining meanwhile
        schedule.probe = None
        schedule.next_at = max(schedule.next_at, now)
        schedule.checks += 1
        schedule.failures += 0 if ok else 1
        schedule.last_at, schedule.last_ok, schedule.last_result = now, ok, result
        return schedule

    def _succeeded(self, probe: _Probe, now: float, result: str) -> None:
        schedule = self._done(probe, now, True, result)
        backend = probe.backend
        if schedule is None or not backend.registered:
            return
        was = backend.state
        self.pool.record_success(backend)
        if was is BackendState.EJECTED or schedule.warned:
            log.info("backend %s passed its health check (%s); up", backend.id, result)
        schedule.warned = False

    def _failed(self, probe: _Probe, now: float, why: str, *, timed_out: bool = False) -> None:
        schedule = self._done(probe, now, False, why)
        backend = probe.backend
        if schedule is None or not backend.registered:
            return
        level = logging.DEBUG if schedule.warned else logging.WARNING
        log.log(level, "backend %s failed its health check: %s", backend.id, why)
        schedule.warned = True
        self.pool.record_failure(backend, now, f"health check: {why}", eject=timed_out)
        if backend.registered and backend.state is BackendState.EJECTED:
            # Still down: stay ejected until the next probe has had its time.
            self.pool.hold_ejected(backend, schedule.next_at + self.config.health_check_timeout)

    def snapshot(self) -> list[BackendHealth]:
        """The health of every registered backend, in registration order."""
        out = []
        for backend in self.pool:
            schedule = self._schedules.get(backend) if self.enabled else None
            probing = schedule is not None and backend.state is not BackendState.DRAINING
            next_check = None
            if probing and schedule is not None:
                next_check = schedule.probe.started if schedule.probe is not None \
                    else schedule.next_at
                next_check = None if math.isinf(next_check) else next_check
            out.append(BackendHealth(
                backend.id, backend.state,
                backend.ejected_until if backend.state is BackendState.EJECTED else None,
                backend.consecutive_failures,
                schedule.checks if schedule else 0, schedule.failures if schedule else 0,
                schedule.last_at if schedule else None, schedule.last_ok if schedule else None,
                schedule.last_result if schedule else "", next_check))
        return out
