"""Reload: what a new configuration changes in a running proxy, as a plan.

:func:`plan` compares the running :class:`ProxyConfig` with a newly read one and
says what to do: backends to register and to drain with migrate, discovered
entries to start and stop, settings that change live (:data:`LIVE_KEYS`), and
settings that need a restart, which are left as they were and reported one line
each. :meth:`wspipe_core.Proxy.reconfigure` carries the plan out in the core; the
driver re-reads the file (on SIGHUP or ``POST /reload``) and handles its own keys.

Backends are compared as configured entries: a backend registered at runtime (the
admin API) is not in the file, so a reload never drains it; a removed entry that
is no longer in the pool is skipped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .allowlist import BackendAllowList
from .config import ProxyConfig
from .discovery import is_discovered, parse_target
from .errors import ConfigError, InvalidBackendURL
from .pool import parse_backend_url

#: Keys a reload changes in a running proxy. Each is read by the core where it is
#: used, from the proxy's current configuration (not copied at start-up): the
#: client handshake's limits and timeout, the failover timings, what the backend
#: receives, pool health, migration pace, the memory budget, health checks, the
#: discovery interval and plugin settings (handed to ``wspipe_reconfigure``).
LIVE_KEYS = frozenset({
    "backends", "discovery_interval",
    "max_connections", "max_pending_per_peer", "max_pending_handshakes", "max_header_size",
    "handshake_timeout",
    "link_timeout", "race_after", "max_interruption", "close_timeout", "interruption_codes",
    "forward_target", "forward_headers", "client_id_header",
    "eject_after", "eject_base", "eject_max", "max_errors",
    "migrate_rate", "memory_budget",
    "health_check_interval", "health_check_timeout", "health_check_path",
    "health_check_status",
    "plugin_settings",
})


@dataclass(frozen=True, slots=True)
class Change:
    """One key whose value differs between the running and the new configuration."""

    key: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class Plan:
    """What a reload does; see :func:`plan`."""

    #: The configuration to run with: the new values of the live keys, the running
    #: values of the others.
    config: ProxyConfig
    #: Static backend URLs to register, and to drain with migrate.
    add_backends: tuple[str, ...] = ()
    remove_backends: tuple[str, ...] = ()
    #: Discovered entries (``dns+``/``srv+``) to start, and to stop (their members
    #: are drained with migrate).
    add_discovered: tuple[str, ...] = ()
    remove_discovered: tuple[str, ...] = ()
    #: Live keys that change (``backends`` included).
    live: tuple[Change, ...] = ()
    #: Keys that differ but need a restart: left as they were.
    restart: tuple[Change, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing differs."""
        return not (self.live or self.restart)

    def restart_lines(self) -> list[str]:
        """One line per restart-only change, for the log and the reload answer."""
        return [f"{c.key}: {c.old!r} -> {c.new!r} needs a restart; still {c.old!r}"
                for c in self.restart]


def _validate_entries(entries: tuple[str, ...], allow: BackendAllowList) -> None:
    for entry in entries:
        try:
            if is_discovered(entry):
                parse_target(entry)  # its members are checked against allow when added
            elif not allow.allows(parse_backend_url(entry).host):
                raise ConfigError(f"backends: {entry} is not on backend_allow")
        except InvalidBackendURL as exc:
            raise ConfigError(f"backends: {exc}") from None


def plan(running: ProxyConfig, new: ProxyConfig) -> Plan:
    """The plan that takes a proxy running ``running`` to ``new``.

    :raises ConfigError: A new backend entry is invalid, or the new live values do
        not fit the running restart-only ones (``memory_budget`` below
        ``buffer_limit``); then nothing may change.
    """
    _validate_entries(new.backends, BackendAllowList.parse(running.backend_allow))
    live: list[Change] = []
    restart: list[Change] = []
    for f in dataclasses.fields(ProxyConfig):
        old_value, new_value = getattr(running, f.name), getattr(new, f.name)
        if old_value == new_value:
            continue
        (live if f.name in LIVE_KEYS else restart).append(Change(f.name, old_value, new_value))
    config = dataclasses.replace(running, **{c.key: c.new for c in live})  # validates
    old_entries, new_entries = list(dict.fromkeys(running.backends)), list(
        dict.fromkeys(new.backends))
    added = [e for e in new_entries if e not in old_entries]
    removed = [e for e in old_entries if e not in new_entries]
    return Plan(
        config=config,
        add_backends=tuple(e for e in added if not is_discovered(e)),
        remove_backends=tuple(e for e in removed if not is_discovered(e)),
        add_discovered=tuple(e for e in added if is_discovered(e)),
        remove_discovered=tuple(e for e in removed if is_discovered(e)),
        live=tuple(live), restart=tuple(restart))
