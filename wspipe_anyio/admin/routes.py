"""The endpoints of the admin API, over a :class:`~wspipe_anyio.control.ProxyControl`.

::

    GET    /healthz                      200 while the process serves (no token)
    GET    /readyz                       200 if a backend is up (and not shutting down),
                                         else 503 (no token)
    GET    /backends                     [{id, url, state, pipes, errors, weight, migration}]
    POST   /backends  {"url", "weight"}  201 backend | 400 invalid | 409 duplicate
    GET    /backends/{id}                200 backend | 404 unknown
    DELETE /backends/{id}?migrate=BOOL   202 draining (migrating at migrate_rate) | 404
    GET    /pipes                        [{id, client_id, backend_id, state, ...}]
    GET    /pipes/{id}                   200 pipe | 404 unknown
    GET    /metrics                      Prometheus text exposition of the proxy's metrics

Every other endpoint needs ``Authorization: Bearer <token>`` (401 without, 403
with a wrong one); the token and the Authorization header are never logged.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any, Self
from urllib.parse import parse_qsl

from wspipe_core import (
    BackendAlreadyRegistered,
    BackendInfo,
    BackendState,
    InvalidBackendURL,
    MigrationInfo,
    PipeInfo,
    UnknownBackend,
)

from ..control import ProxyControl
from .http import MAX_BODY, REQUEST_TIMEOUT, Handler, HttpServer, Reply, Request, error, is_loopback

log = logging.getLogger("wspipe.admin")

#: Endpoints that need no token (load balancers and orchestrators probe them).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})

_GET = frozenset({"GET"})


class AdminConfigError(ValueError):
    """The admin listener cannot start with these settings (e.g. no token off loopback)."""


# JSON views of the core's snapshots.


def migration_json(info: MigrationInfo | None) -> dict[str, Any] | None:
    """``{total, moved, remaining, waiting}`` of a migration under way, or ``None``."""
    if info is None:
        return None
    return {"total": info.total, "moved": info.moved, "remaining": info.remaining,
            "waiting": info.waiting}


def backend_json(info: BackendInfo, migration: MigrationInfo | None = None) -> dict[str, Any]:
    """``{id, url, state, pipes, errors, consecutive_failures, weight, migration}``."""
    return {"id": info.id, "url": info.url, "state": info.state.value, "pipes": info.pipes,
            "errors": info.errors, "consecutive_failures": info.consecutive_failures,
            "weight": info.weight, "migration": migration_json(migration)}


def pipe_json(info: PipeInfo, now: float, wall_offset: float) -> dict[str, Any]:
    """``{id, client_id, backend_id, state, buffered_bytes, interruptions, since, ...}``.

    ``since`` is wall-clock Unix time (the core's monotonic time plus
    ``wall_offset``); ``age_seconds`` is how long the pipe has lived. Request
    headers are never shown (they carry cookies and credentials).
    """
    age = max(0.0, now - info.since)
    return {"id": info.id, "client_id": info.client_id, "backend_id": info.backend_id,
            "state": info.state.value, "buffered_bytes": info.buffered_bytes,
            "interruptions": info.interruptions, "since": round(info.since + wall_offset, 3),
            "age_seconds": round(age, 3), "subprotocol": info.subprotocol,
            "peer": info.request.peer, "path": info.request.path}


def parse_bool(name: str, value: str) -> bool:
    """A boolean query parameter; 400 unless ``true/false/1/0/yes/no/on/off``."""
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise error(400, f"query parameter {name} must be true or false, got {value!r}")


class AdminRoutes:
    """The admin endpoints of one proxy: authorization, routing and the handlers.

    :param control: The proxy to read and change.
    :param token: Bearer token required off :data:`PUBLIC_PATHS`; ``None``: open.
    """

    def __init__(self, control: ProxyControl, token: str | None) -> None:
        self.control = control
        self._token = token.encode() if token is not None else None
        #: Wall-clock time minus the proxy's monotonic time (for ``since``).
        self.wall_offset = time.time() - control.now()

    def route(self, request: Request) -> Handler:
        """The handler of ``request``; raise 401/403 (token), 404 or 405 first."""
        handler, allowed = self._lookup(request.path)
        if request.path not in PUBLIC_PATHS:
            self._authorize(request)
        if handler is None:
            raise error(404, f"no such endpoint: {request.path}")
        if request.method not in allowed:
            raise error(405, f"method {request.method} not allowed on {request.path}; "
                             f"allowed: {', '.join(sorted(allowed))}",
                        headers=[("allow", ", ".join(sorted(allowed)))])
        return handler

    def _lookup(self, path: str) -> tuple[Handler | None, frozenset[str]]:
        if path == "/healthz":
            return self.healthz, _GET
        if path == "/readyz":
            return self.readyz, _GET
        if path == "/metrics":
            return self.metrics, _GET
        if path in ("/backends", "/backends/"):
            return self.backends, frozenset({"GET", "POST"})
        if path in ("/pipes", "/pipes/"):
            return self.pipes, _GET
        head, _, rest = path.lstrip("/").partition("/")
        if rest and "/" not in rest:
            if head == "backends":
                return self.backend, frozenset({"GET", "DELETE"})
            if head == "pipes":
                return self.pipe, _GET
        return None, frozenset()

    def _authorize(self, request: Request) -> None:
        if self._token is None:
            return
        challenge = [("www-authenticate", 'Bearer realm="wspipe-admin"')]
        header = request.header(b"authorization")
        if header is None:
            raise error(401, "missing token: send Authorization: Bearer <token>",
                        headers=challenge)
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            raise error(401, "malformed Authorization header: expected Bearer <token>",
                        headers=challenge)
        if not hmac.compare_digest(given.strip(), self._token):
            raise error(403, "invalid token")

    # Endpoints.

    def healthz(self, request: Request) -> Reply:
        """``GET /healthz``: the process serves."""
        return Reply(200, {"status": "ok"})

    def readyz(self, request: Request) -> Reply:
        """``GET /readyz``: 200 while a backend is up and the proxy is not stopping."""
        backends = self.control.backends()
        up = sum(1 for b in backends if b.state is BackendState.UP)
        body = {"ready": up > 0, "backends_up": up, "backends": len(backends)}
        if self.control.stopping:
            return Reply(503, {**body, "ready": False, "detail": "shutting down"},
                         log_reason="shutting down")
        if not up:
            return Reply(503, {**body, "detail": "no backend is up"},
                         log_reason="no backend is up")
        return Reply(200, body)

    def metrics(self, request: Request) -> Reply:
        """``GET /metrics``: the proxy's metrics, in the format the scraper accepts."""
        body, content_type = self.control.metrics.exposition(request.header(b"accept"))
        return Reply(200, body, content_type=content_type)

    def _migrations(self) -> dict[str, MigrationInfo]:
        return {m.backend_id: m for m in self.control.migrations()}

    def backends(self, request: Request) -> Reply:
        """``GET /backends`` lists the pool; ``POST /backends`` registers a backend."""
        if request.method != "POST":
            migrations = self._migrations()
            return Reply(200, [backend_json(b, migrations.get(b.id))
                               for b in self.control.backends()])
        try:
            payload = json.loads(request.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise error(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise error(400, 'body must be a JSON object: {"url": "ws://...", "weight": 1}')
        unknown = sorted(set(payload) - {"url", "weight"})
        if unknown:
            raise error(400, f"unknown field(s): {', '.join(unknown)}")
        url = payload.get("url")
        weight = payload.get("weight", 1.0)
        if not isinstance(url, str):
            raise error(400, "field url (a ws:// or wss:// URL string) is required")
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise error(400, "field weight must be a number > 0")
        try:
            info = self.control.add_backend(url, weight=float(weight))
        except InvalidBackendURL as exc:
            raise error(400, str(exc)) from None
        except BackendAlreadyRegistered as exc:
            raise error(409, str(exc)) from None
        log.info("admin: backend %s registered: %s (weight %g)", info.id, info.url, info.weight)
        return Reply(201, backend_json(info), headers=[("location", f"/backends/{info.id}")])

    def _find_backend(self, backend_id: str) -> BackendInfo:
        for info in self.control.backends():
            if info.id == backend_id:
                return info
        raise error(404, f"no backend {backend_id!r} in the pool")

    def backend(self, request: Request) -> Reply:
        """``GET /backends/{id}`` shows one; ``DELETE`` drains it (``?migrate=true``)."""
        backend_id = request.path.rstrip("/").rsplit("/", 1)[1]
        info = self._find_backend(backend_id)
        if request.method != "DELETE":
            return Reply(200, backend_json(info, self._migrations().get(backend_id)))
        migrate = False
        for name, value in parse_qsl(request.query, keep_blank_values=True):
            if name != "migrate":
                raise error(400, f"unknown query parameter {name!r}")
            migrate = parse_bool(name, value)
        try:
            self.control.remove_backend(backend_id, migrate=migrate)
        except UnknownBackend as exc:
            raise error(404, str(exc)) from None
        rate = self.control.config.migrate_rate
        log.info("admin: backend %s %s draining (%d pipes)%s", info.id, info.url, info.pipes,
                 f", migrating at {rate:g} pipes/s" if migrate else "")
        body = {**backend_json(info, self._migrations().get(backend_id)),
                "state": BackendState.DRAINING.value, "migrate": migrate,
                "migrate_rate": rate if migrate else None,
                "removed": all(b.id != backend_id for b in self.control.backends())}
        return Reply(202, body)

    def pipes(self, request: Request) -> Reply:
        """``GET /pipes``: every live pipe."""
        now = self.control.now()
        return Reply(200, [pipe_json(p, now, self.wall_offset) for p in self.control.pipes()])

    def pipe(self, request: Request) -> Reply:
        """``GET /pipes/{id}``: one pipe."""
        pipe_id = request.path.rstrip("/").rsplit("/", 1)[1]
        for info in self.control.pipes():
            if info.id == pipe_id:
                return Reply(200, pipe_json(info, self.control.now(), self.wall_offset))
        raise error(404, f"no pipe {pipe_id!r}")


class AdminServer(HttpServer):
    """The admin HTTP listener of one proxy: :class:`AdminRoutes` on an :class:`HttpServer`.

    :param control: The proxy to control (a :class:`~wspipe_anyio.ProxyServer`).
    :param host: Listen address; loopback unless a token is set.
    :param port: Listen port (0 picks a free one; see :attr:`port`).
    :param token: Bearer token required on every endpoint but ``/healthz`` and
        ``/readyz``. ``None`` leaves them open, which is only allowed on loopback.
    :raises AdminConfigError: Non-loopback ``host`` without a token, or an empty token.
    """

    def __init__(self, control: ProxyControl, *, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, max_body: int = MAX_BODY,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        if token is not None and not token:
            raise AdminConfigError("the admin token is empty")
        if token is None and not is_loopback(host):
            raise AdminConfigError(
                f"refusing to serve the admin API on non-loopback address {host} without a "
                "token (set --admin-token or --admin-token-file)")
        self.routes = AdminRoutes(control, token)
        self.control = control
        self._has_token = token is not None
        super().__init__(self.routes, host=host, port=port, max_body=max_body,
                         request_timeout=request_timeout)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        log.info("admin API listening on %s (token %s)", self.url,
                 "required" if self._has_token else "not set: loopback only")
        return self
