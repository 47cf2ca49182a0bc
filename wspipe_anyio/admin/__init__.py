"""The admin listener: a small JSON-over-HTTP control plane for a running proxy.

A listener of its own, apart from the client one, served with h11 on anyio
(asyncio or trio). It reads and changes the pool at runtime, lists pipes, drains
backends (optionally migrating their pipes, paced by the core at
``ProxyConfig.migrate_rate``), renders the proxy's Prometheus metrics and answers
health checks. It drives any :class:`~wspipe_anyio.control.ProxyControl`, which
:class:`~wspipe_anyio.ProxyServer` implements, and touches nothing else.

- :mod:`.http`: the HTTP/1.1 plumbing (h11, limits, deadlines, the connection cap,
  JSON errors);
- :mod:`.guard`: who may drive it (``Host``, ``Origin``, token, ``Content-Type``);
- :mod:`.tokens`: the generated token and its private file;
- :mod:`.routes`: the endpoints (listed there) and :class:`AdminServer`;
- :mod:`.options`: ``serve`` flags, config keys, :class:`AdminOptions`, :func:`open_admin`.
"""

from __future__ import annotations

from .errors import AdminConfigError
from .guard import Guard
from .http import (
    HEAD_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_BODY,
    MAX_CONNECTIONS,
    MAX_HEAD,
    MAX_REQUESTS_PER_CONNECTION,
    REQUEST_TIMEOUT,
    HttpServer,
    Reply,
    Request,
    Route,
    is_loopback,
)
from .options import (
    ADMIN_DEFAULTS,
    ADMIN_KEYS,
    TOKEN_ENV,
    AdminOptions,
    add_admin_flags,
    admin_options,
    load_token,
    open_admin,
)
from .routes import (
    MAX_JSON_DEPTH,
    PUBLIC_PATHS,
    AdminRoutes,
    AdminServer,
    backend_json,
    migration_json,
    parse_json,
    pipe_json,
)
from .tokens import find_token, generate_token, token_directories, token_file_name

__all__ = [
    "ADMIN_DEFAULTS",
    "ADMIN_KEYS",
    "HEAD_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_BODY",
    "MAX_CONNECTIONS",
    "MAX_HEAD",
    "MAX_JSON_DEPTH",
    "MAX_REQUESTS_PER_CONNECTION",
    "PUBLIC_PATHS",
    "REQUEST_TIMEOUT",
    "TOKEN_ENV",
    "AdminConfigError",
    "AdminOptions",
    "AdminRoutes",
    "AdminServer",
    "Guard",
    "HttpServer",
    "Reply",
    "Request",
    "Route",
    "add_admin_flags",
    "admin_options",
    "backend_json",
    "find_token",
    "generate_token",
    "is_loopback",
    "load_token",
    "migration_json",
    "open_admin",
    "parse_json",
    "pipe_json",
    "token_directories",
    "token_file_name",
]
