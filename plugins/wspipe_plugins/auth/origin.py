"""``origin``: an allow-list of ``Origin`` header values; anything else gets HTTP 403.

Browsers send ``Origin`` with every WebSocket upgrade, so this stops other sites'
pages from opening sessions with your users' cookies (cross-site WebSocket
hijacking). Entries are origins (``https://app.example.com``, port included when it
is not the default), compared case-insensitively; ``https://*.example.com`` allows
any subdomain (not ``example.com`` itself). Requests without ``Origin`` (non-browser
clients) are refused too unless ``allow_missing = true``::

    [plugins.origin]
    allowed = ["https://app.example.com", "https://*.example.com"]
    allow_missing = false
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from wspipe_core import ConfigError, ProxyConfig, Reject, RequestInfo, hookimpl

from .._settings import Settings, activate

NAME = "origin"


def _normalize(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


class OriginAllowList:
    """Refuse clients whose ``Origin`` is not allowed.

    :param allowed: Allowed origins; ``scheme://*.domain[:port]`` matches subdomains.
    :param allow_missing: Accept requests that carry no ``Origin`` header.
    """

    def __init__(self, allowed: Iterable[str], *, allow_missing: bool = False) -> None:
        self.exact: set[str] = set()
        #: (scheme://, .domain[:port]) pairs from wildcard entries.
        self.wildcards: list[tuple[str, str]] = []
        for entry in map(_normalize, allowed):
            scheme, sep, rest = entry.partition("://")
            if not sep or not scheme or not rest:
                raise ConfigError(f"[plugins.{NAME}] allowed: {entry!r} is not an origin "
                                  "(scheme://host[:port])")
            if rest.startswith("*."):
                self.wildcards.append((scheme + "://", rest[1:]))
            else:
                self.exact.add(entry)
        if not self.exact and not self.wildcards and not allow_missing:
            raise ConfigError(f"[plugins.{NAME}] allowed: at least one origin is needed")
        self.allow_missing = allow_missing

    def allows(self, origin: str) -> bool:
        """Whether ``origin`` (an ``Origin`` header value) is on the list."""
        origin = _normalize(origin)
        if origin in self.exact:
            return True
        for scheme, suffix in self.wildcards:
            host = origin[len(scheme):] if origin.startswith(scheme) else ""
            if host.endswith(suffix) and len(host) > len(suffix) and "/" not in host:
                return True
        return False

    @hookimpl
    def wspipe_authenticate(self, request: RequestInfo) -> Reject | None:
        origin = request.header("origin")
        if origin is None:
            return None if self.allow_missing else Reject(403, "Origin header required")
        if not self.allows(origin):
            return Reject(403, "origin not allowed")
        return None


def from_settings(settings: Settings) -> OriginAllowList:
    """An :class:`OriginAllowList` from a ``[plugins.origin]`` table."""
    plugin = OriginAllowList(settings.strings("allowed"),
                             allow_missing=settings.flag("allow_missing", False))
    settings.done()
    return plugin


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register an :class:`OriginAllowList` configured from ``[plugins.origin]``."""
    activate(pm, NAME, from_settings(Settings.of(config, NAME)))


@hookimpl
def wspipe_reconfigure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Take the reloaded ``[plugins.origin]`` table (a table that cannot be read keeps
    the running list)."""
    running = pm.get_plugin(f"{NAME}:{OriginAllowList.__name__}")
    if isinstance(running, OriginAllowList):
        fresh = from_settings(Settings.of(config, NAME))
        running.exact, running.wildcards = fresh.exact, fresh.wildcards
        running.allow_missing = fresh.allow_missing
