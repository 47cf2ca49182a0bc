"""The endpoints of the admin API, over a :class:`~wspipe_anyio.control.ProxyControl`.

::

    GET    /healthz                      200 while the process serves (a probe)
    GET    /readyz                       200 if a backend is up (and not shutting down),
                                         else 503 (a probe)
    GET    /backends                     [{id, url, state, pipes, errors, weight, migration}]
    POST   /backends  {"url", "weight"}  201 backend | 400 invalid | 409 duplicate
    GET    /backends/{id}                200 backend | 404 unknown
    DELETE /backends/{id}?migrate=BOOL   202 draining (migrating at migrate_rate) | 404
    GET    /pipes                        [{id, client_id, backend_id, state, ...}]
    GET    /pipes/{id}                   200 pipe | 404 unknown
    GET    /metrics                      Prometheus text exposition of the proxy's metrics
    GET    /summary?offset=&limit=&state=&backend=
                                         everything the console shows (pool with health,
                                         totals, one page of pipes)
    POST   /reload                       re-read the configuration (SIGHUP does the same):
                                         200 {applied, restart_required, backends_added,
                                         backends_removed} | 422 unreadable or invalid
                                         (nothing changed) | 404 no configuration to reload
    GET    / , /status, /console.js, /console.css
                                         the console page (no token; Host and Origin checked)

The probes are answered from the proxy's state at once and need nothing. Every
other request passes the :class:`~.guard.Guard` (own ``Host`` or 421, no foreign
``Origin`` or 403, ``Authorization: Bearer <token>`` or 401/403) and, when it is a
``POST`` or has a body, must be ``application/json`` (415). There is always a
token: when none is configured, one is generated and written to a file only the
user can read (:mod:`.tokens`). Backend URLs in answers are masked
(:func:`wspipe_anyio.logfmt.mask_url`); the token is never logged.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

from wspipe_core import (
    BackendAlreadyRegistered,
    BackendInfo,
    BackendNotAllowed,
    BackendState,
    InvalidBackendURL,
    MigrationInfo,
    UnknownBackend,
)
from wspipe_core.store import StoreUnavailable

from ..control import ProxyControl
from ..logfmt import mask_url, mask_urls
from ..reload import ReloadFailed
from .console import ASSETS, Assets, summary_json
from .errors import AdminConfigError
from .guard import Guard
from .http import (
    HEAD_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_BODY,
    MAX_CONNECTIONS,
    REQUEST_TIMEOUT,
    Handler,
    HttpServer,
    Reply,
    Request,
    Route,
    error,
    is_loopback,
)
from .tokens import generate_token, prepare_token_directory, remove_token_file, write_token_file
from .views import backend_json, migration_json, pipe_json

log = logging.getLogger("wspipe.admin")

#: Endpoints that need nothing (load balancers and orchestrators probe them).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
#: Deepest nesting of ``[`` and ``{`` accepted in a JSON body (the API needs 1).
MAX_JSON_DEPTH = 32

_GET = frozenset({"GET"})

__all__ = ["PUBLIC_PATHS", "AdminConfigError", "AdminRoutes", "AdminServer", "backend_json",
           "migration_json", "parse_json", "pipe_json"]


def parse_bool(name: str, value: str) -> bool:
    """A boolean query parameter; 400 unless ``true/false/1/0/yes/no/on/off``."""
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise error(400, f"query parameter {name} must be true or false, got {value[:100]!r}")


def _json_depth(body: bytes) -> int:
    """How deep ``[`` and ``{`` nest in ``body`` (outside strings), in one pass."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(body: bytes) -> Any:
    """A request body as strict JSON (RFC 8259): no ``NaN``/``Infinity``, bounded depth.

    :raises Reply: 400 saying why (never a 500).
    """
    if _json_depth(body) > MAX_JSON_DEPTH:
        raise error(400, f"body is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(body or b"null", parse_constant=_no_constant)
    except RecursionError:
        raise error(400, "body is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(400, f"body is not valid JSON: {exc}") from None


class AdminRoutes:
    """The admin endpoints of one proxy: the guard, routing and the handlers.

    :param control: The proxy to read and change.
    :param guard: Host, Origin and token checks for every request but a probe (the
        console's page and assets need no token).
    """

    def __init__(self, control: ProxyControl, guard: Guard,
                 reloader: Callable[[], dict[str, Any]] | None = None) -> None:
        self.control = control
        self.guard = guard
        #: Re-reads the configuration (``wspipe serve``'s :class:`~..reload.Reloader`).
        self.reloader = reloader
        self.assets = Assets()
        #: Wall-clock time minus the proxy's monotonic time (for ``since``).
        self.wall_offset = time.time() - control.now()

    def route(self, request: Request) -> Route:
        """The route of ``request``; probes at once, else 421/403/401 first, then 404,
        405 and 415."""
        handler, allowed = self._lookup(request.path)
        if request.path in ASSETS:
            self.guard.check_site(request)  # a page with no data: Host and Origin only
        elif request.path not in PUBLIC_PATHS:
            self.guard.check(request)
        if handler is None:
            raise error(404, f"no such endpoint: {request.path[:200]}")
        if request.method not in allowed:
            raise error(405, f"method {request.method[:20]} not allowed on "
                             f"{request.path}; allowed: {', '.join(sorted(allowed))}",
                        headers=[("allow", ", ".join(sorted(allowed)))])
        if request.path in PUBLIC_PATHS or request.path in ASSETS:
            return Route(handler)  # answered at once; a body is never read
        self.guard.check_content_type(request)
        return Route(handler, reads_body=request.method == "POST")

    def _lookup(self, path: str) -> tuple[Handler | None, frozenset[str]]:
        if path == "/healthz":
            return self.healthz, _GET
        if path == "/readyz":
            return self.readyz, _GET
        if path == "/metrics":
            return self.metrics, _GET
        if path == "/summary":
            return self.summary, _GET
        if path in ASSETS:
            return self.asset, _GET
        if path in ("/backends", "/backends/"):
            return self.backends, frozenset({"GET", "POST"})
        if path in ("/pipes", "/pipes/"):
            return self.pipes, _GET
        if path in ("/fleet", "/fleet/"):
            return self.fleet, _GET
        if path == "/reload" and self.reloader is not None:
            return self.reload, frozenset({"POST"})
        head, _, rest = path.lstrip("/").partition("/")
        if rest and "/" not in rest:
            if head == "backends":
                return self.backend, frozenset({"GET", "DELETE"})
            if head == "pipes":
                return self.pipe, _GET
        return None, frozenset()

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

    def asset(self, request: Request) -> Reply:
        """``GET /``, ``/status`` and the page's script and style sheet."""
        return self.assets.reply(request.path)

    def summary(self, request: Request) -> Reply:
        """``GET /summary``: everything the console shows, in one answer."""
        return Reply(200, summary_json(self.control, request, self.wall_offset))

    def _migrations(self) -> dict[str, MigrationInfo]:
        return {m.backend_id: m for m in self.control.migrations()}

    def backends(self, request: Request) -> Reply:
        """``GET /backends`` lists the pool; ``POST /backends`` registers a backend."""
        if request.method != "POST":
            migrations = self._migrations()
            return Reply(200, [backend_json(b, migrations.get(b.id))
                               for b in self.control.backends()])
        payload = parse_json(request.body)
        if not isinstance(payload, dict):
            raise error(400, 'body must be a JSON object: {"url": "ws://...", "weight": 1}')
        unknown = sorted(set(payload) - {"url", "weight"})
        if unknown:
            raise error(400, f"unknown field(s): {', '.join(u[:50] for u in unknown[:10])}")
        url = payload.get("url")
        weight = payload.get("weight", 1.0)
        if not isinstance(url, str):
            raise error(400, "field url (a ws:// or wss:// URL string) is required")
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise error(400, "field weight must be a number > 0")
        try:
            weight = float(weight)
        except OverflowError:
            weight = math.inf
        if not math.isfinite(weight) or weight <= 0:
            raise error(400, "field weight must be a finite number > 0")
        try:
            info = self.control.add_backend(url, weight=weight)
        except InvalidBackendURL as exc:
            raise error(400, _masked(str(exc), url)) from None
        except BackendNotAllowed as exc:
            log.warning("admin: backend refused: %s", _masked(str(exc), url))
            raise error(403, _masked(str(exc), url)) from None
        except BackendAlreadyRegistered as exc:
            raise error(409, _masked(str(exc), url)) from None
        except StoreUnavailable as exc:
            raise error(503, str(exc)) from None
        log.info("admin: backend %s registered: %s (weight %g)", info.id, mask_url(info.url),
                 info.weight)
        return Reply(201, backend_json(info), headers=[("location", f"/backends/{info.id}")])

    def _find_backend(self, backend_id: str) -> BackendInfo:
        for info in self.control.backends():
            if info.id == backend_id:
                return info
        raise error(404, f"no backend {backend_id[:100]!r} in the pool")

    def backend(self, request: Request) -> Reply:
        """``GET /backends/{id}`` shows one; ``DELETE`` drains it (``?migrate=true``)."""
        backend_id = request.path.rstrip("/").rsplit("/", 1)[1]
        info = self._find_backend(backend_id)
        if request.method != "DELETE":
            return Reply(200, backend_json(info, self._migrations().get(backend_id)))
        migrate = False
        for name, value in parse_qsl(request.query, keep_blank_values=True):
            if name != "migrate":
                raise error(400, f"unknown query parameter {name[:100]!r}")
            migrate = parse_bool(name, value)
        try:
            self.control.remove_backend(backend_id, migrate=migrate)
        except UnknownBackend as exc:
            raise error(404, mask_urls(str(exc))) from None
        except StoreUnavailable as exc:
            raise error(503, str(exc)) from None
        rate = self.control.config.migrate_rate
        log.info("admin: backend %s %s draining (%d pipes)%s", info.id, mask_url(info.url),
                 info.pipes, f", migrating at {rate:g} pipes/s" if migrate else "")
        body = {**backend_json(info, self._migrations().get(backend_id)),
                "state": BackendState.DRAINING.value, "migrate": migrate,
                "migrate_rate": rate if migrate else None,
                "removed": all(b.id != backend_id for b in self.control.backends())}
        return Reply(202, body)

    def fleet(self, request: Request) -> Reply:
        """``GET /fleet``: the instances of the fleet, their pipes and health."""
        return Reply(200, self.control.fleet())
    def reload(self, request: Request) -> Reply:
        """``POST /reload``: re-read the configuration, as SIGHUP does."""
        assert self.reloader is not None
        try:
            report = self.reloader()
        except ReloadFailed as exc:
            raise error(422, f"reload failed, nothing changed: {mask_urls(str(exc))}") from None
        log.info("admin: configuration reloaded")
        return Reply(200, report)

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
        raise error(404, f"no pipe {pipe_id[:100]!r}")


def _masked(message: str, url: str) -> str:
    """An error message of the core about ``url`` with every URL in it masked."""
    masked = mask_url(url)
    return mask_urls(message.replace(repr(url), repr(masked)).replace(url, masked))


class AdminServer(HttpServer):
    """The admin HTTP listener of one proxy: :class:`AdminRoutes` on an :class:`HttpServer`.

    :param control: The proxy to control (a :class:`~wspipe_anyio.ProxyServer`): a
        :class:`~.console.ProxyControl`.
    :param host: Listen address; loopback unless a token is given.
    :param port: Listen port (0 picks a free one; see :attr:`port`).
    :param token: Bearer token required on every endpoint but ``/healthz`` and
        ``/readyz``. ``None`` (loopback only): one is generated (:attr:`token`) and
        written to :attr:`token_file`, which the admin CLI finds by itself.
    :param token_file_dir: Where to write the token file (default, for a generated
        token: :func:`~.tokens.prepare_token_directory`). Given with a ``token``, that
        token is written there too (``wspipe serve`` generates its token earlier).
    :param allowed_hosts: More ``Host`` names to answer to (``name`` or ``name:port``).
    :param allowed_origins: Origins allowed besides the request's own.
    :param reloader: What ``POST /reload`` calls (returns the answer, raises
        :class:`~..reload.ReloadFailed`); without one ``/reload`` is 404.
    :raises AdminConfigError: Non-loopback ``host`` without a token, an empty token,
        a malformed allowed host or origin, or no directory for a generated token.
    """

    def __init__(self, control: ProxyControl, *, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, token_file_dir: Path | str | None = None,
                 allowed_hosts: tuple[str, ...] = (), allowed_origins: tuple[str, ...] = (),
                 max_body: int = MAX_BODY, request_timeout: float = REQUEST_TIMEOUT,
                 head_timeout: float = HEAD_TIMEOUT, idle_timeout: float = IDLE_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS,
                 reloader: Callable[[], dict[str, Any]] | None = None,
                 reuse_port: bool = False) -> None:
        if token is None and not is_loopback(host):
            raise AdminConfigError(
                f"refusing to serve the admin API on non-loopback address {host} without a "
                "token (set --admin-token-file, $WSPIPE_ADMIN_TOKEN or --admin-token)")
        generated = token is None
        #: The bearer token (generated when none was given).
        self.token = generate_token() if token is None else token
        self.routes = AdminRoutes(control, Guard(self.token, bind_host=host,
                                                 hosts=allowed_hosts, origins=allowed_origins),
                                  reloader)
        self.control = control
        if token_file_dir is None and generated:
            token_file_dir = prepare_token_directory()
        self._token_dir = Path(token_file_dir) if token_file_dir is not None else None
        #: The file holding the token while the listener runs (``None`` if not written).
        self.token_file: Path | None = None
        super().__init__(self.routes, host=host, port=port, max_body=max_body,
                         request_timeout=request_timeout, head_timeout=head_timeout,
                         idle_timeout=idle_timeout, max_connections=max_connections,
                         reuse_port=reuse_port)

    def __repr__(self) -> str:  # never show the token
        return f"AdminServer(host={self.host!r}, token=***)"

    def rotate_token(self, token: str) -> None:
        """Accept ``token`` from now on and refuse the previous one (a reload)."""
        self.routes.guard.rotate(token)
        self.token = token
        log.info("admin API token rotated: the previous token is refused from now on")

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        if self._token_dir is not None:
            try:
                self.token_file = write_token_file(self._token_dir, self.port, self.token)
            except BaseException:
                await super().__aexit__(None, None, None)
                raise
            log.info("admin API listening on %s; its token is in %s (mode 0600, removed at "
                     "exit): wspipe backends|pipes read it from there, other clients send "
                     "it as Authorization: Bearer", self.url, self.token_file)
        else:
            log.info("admin API listening on %s (token required)", self.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            return await super().__aexit__(exc_type, exc, tb)
        finally:
            if self.token_file is not None:
                remove_token_file(self.token_file, self.token)
