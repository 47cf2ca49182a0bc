"""The operator's console: a status page served by the admin listener, and its JSON.

``GET /`` (and ``/status``) is a plain HTML page with its script and style sheet
(``/console.js``, ``/console.css``), shipped in ``static/`` and served by the proxy
itself: no CDN, nothing fetched from elsewhere. The page holds no data and no
secret, so it is served without a token (``Host`` and ``Origin`` are still checked);
everything it shows comes from ``GET /summary``, which needs the token like the
rest of the API. The operator pastes the token once: the page keeps it in the
tab's ``sessionStorage`` and sends it as ``Authorization: Bearer``, never in a URL
or a cookie, so no other site can make the browser send it (see
docs/operations.md, "The console").

Every page answer carries a Content-Security-Policy that allows this origin's
script, style and ``fetch`` only (no inline script, no framing, no form targets).
"""

from __future__ import annotations

import importlib.metadata
import math
import time
from collections import Counter
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from wspipe_core import BackendHealth, BackendState, PipeState

from ..control import ProxyControl
from .http import Reply, Request, error
from .views import backend_json, pipe_json

#: Most pipes ``/summary`` lists at once (the page pages through the rest).
MAX_PIPES_PER_PAGE = 500
#: Pipes listed when the request does not say.
DEFAULT_PIPES_PER_PAGE = 100

#: The page's assets: path -> (file in ``static/``, content type).
ASSETS = {"/": ("console.html", "text/html; charset=utf-8"),
          "/status": ("console.html", "text/html; charset=utf-8"),
          "/console.js": ("console.js", "text/javascript; charset=utf-8"),
          "/console.css": ("console.css", "text/css; charset=utf-8")}

#: Headers of every page answer: this origin's script, style and fetch only.
PAGE_HEADERS = (
    ("content-security-policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
     "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
)


def installed_version() -> str:
    """The installed version of wspipe (``unknown`` when it is not installed)."""
    try:
        return importlib.metadata.version("wspipe")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Assets:
    """The page's files, read once."""

    def __init__(self) -> None:
        folder = resources.files(__package__).joinpath("static")
        self._files = {path: (folder.joinpath(name).read_bytes(), content_type)
                       for path, (name, content_type) in ASSETS.items()}

    def reply(self, path: str) -> Reply:
        """The asset at ``path`` with the page's security headers."""
        body, content_type = self._files[path]
        return Reply(200, body, content_type=content_type, headers=PAGE_HEADERS)


def _ago(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(0.0, now - then), 3)


def _until(now: float, then: float | None) -> float | None:
    return None if then is None or math.isinf(then) else round(max(0.0, then - now), 3)


def health_json(health: BackendHealth | None, now: float) -> dict[str, Any] | None:
    """``{ejected_for, checks, check_failures, last_ok, last_result, last_check_ago,
    next_check_in}`` of one backend; times are seconds from now."""
    if health is None:
        return None
    return {"ejected_for": _until(now, health.ejected_until), "checks": health.checks,
            "check_failures": health.check_failures, "last_ok": health.last_ok,
            "last_result": health.last_result,
            "last_check_ago": _ago(now, health.last_check),
            "next_check_in": _until(now, health.next_check)}


def _pipe_query(request: Request) -> tuple[int, int, str | None, str | None]:
    """``offset``, ``limit``, ``state`` and ``backend`` of ``GET /summary``; 400 if bad."""
    offset, limit, state, backend = 0, DEFAULT_PIPES_PER_PAGE, None, None
    states = {s.value for s in PipeState}
    for name, value in parse_qsl(request.query, keep_blank_values=True):
        if name in ("offset", "limit"):
            if not value.isdigit() or len(value) > 9:
                raise error(400, f"query parameter {name} must be a whole number")
            if name == "offset":
                offset = int(value)
            else:
                limit = int(value)
                if not 1 <= limit <= MAX_PIPES_PER_PAGE:
                    raise error(400, f"limit must be 1 to {MAX_PIPES_PER_PAGE}")
        elif name == "state":
            if value and value not in states:
                raise error(400, f"state must be one of {', '.join(sorted(states))}")
            state = value or None
        elif name == "backend":
            backend = value[:100] or None
        else:
            raise error(400, f"unknown query parameter {name[:100]!r}")
    return offset, limit, state, backend


def summary_json(control: ProxyControl, request: Request,
                 wall_offset: float) -> dict[str, Any]:
    """Everything the console shows, in one answer (``GET /summary``): pool with health
    and migrations, totals and limits, pipe counts by state, one page of pipes.

    :raises Reply: 400 for a bad query (``offset``, ``limit``, ``state``, ``backend``).
    """
    offset, limit, state, backend_filter = _pipe_query(request)
    now = control.now()
    stats, budget, config = control.stats, control.budget, control.config
    backends = control.backends()
    migrations = {m.backend_id: m for m in control.migrations()}
    health = {h.backend_id: h for h in control.backend_health()}
    pipes = control.pipes()
    by_state = Counter(p.state.value for p in pipes)
    chosen = [p for p in pipes if (state is None or p.state.value == state)
              and (backend_filter is None or p.backend_id == backend_filter)]
    up = sum(1 for b in backends if b.state is BackendState.UP)
    return {
        "version": installed_version(),
        "time": round(time.time(), 3),
        "ready": up > 0 and not control.stopping,
        "stopping": control.stopping,
        "limits": {"max_connections": config.max_connections,
                   "memory_budget": budget.limit, "buffer_limit": config.buffer_limit,
                   "migrate_rate": config.migrate_rate,
                   "health_check_interval": config.health_check_interval,
                   "eject_after": config.eject_after},
        "totals": {"connections": control.connections, "pipes": len(pipes),
                   "clients_accepted": stats.clients_accepted,
                   "messages_in": stats.messages_in, "messages_out": stats.messages_out,
                   "bytes_in": stats.bytes_in, "bytes_out": stats.bytes_out,
                   "interruptions": sum(stats.interruptions.values()),
                   "failovers": stats.failovers, "pipes_migrated": stats.pipes_migrated,
                   "link_failures": sum(stats.link_failures.values()),
                   "parked": sum(1 for p in pipes if p.parked_until is not None),
                   "client_resumes": stats.client_resumes,
                   "resume_expired": stats.resume_expired,
                   "buffered_bytes": budget.used, "buffered_high_water": budget.high_water,
                   "outbox_bytes": control.queued_bytes()},
        "pipe_states": {s.value: by_state[s.value] for s in PipeState
                        if s is not PipeState.CLOSED},
        "backends": [{**backend_json(b, migrations.get(b.id)),
                      "health": health_json(health.get(b.id), now)} for b in backends],
        "pipes": {"total": len(chosen), "offset": offset, "limit": limit, "state": state,
                  "backend": backend_filter,
                  "items": [pipe_json(p, now, wall_offset)
                            for p in chosen[offset:offset + limit]]},
    }
