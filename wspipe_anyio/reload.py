"""Reload without dropping anyone: SIGHUP and ``POST /reload`` re-read the configuration.

:class:`Reloader` re-runs the settings merge exactly as start-up did (the same flags,
the environment, the config file, token files re-read), validates the result, and
only then applies it: the core's part through :meth:`ProxyServer.reconfigure` (the
plan of :mod:`wspipe_core.reconfigure`: backends added, removed ones drained with
migrate, live limits, plugin settings), the driver's part here (the admin token).
Every other driver key (listen addresses, TLS files, the event loop, log settings,
the admin address) needs a restart: a reload reports each in one line and leaves it.
A configuration that cannot be read or applied changes nothing: the error is logged
and raised as :class:`ReloadFailed` (``POST /reload`` answers 422).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from wspipe_core import ConfigError, ProxyConfig
from wspipe_core.reconfigure import Plan

log = logging.getLogger("wspipe.reload")

#: Driver keys a reload changes (the admin token, given or read from its file).
LIVE_DRIVER_KEYS = frozenset({"admin_token", "admin_token_file"})


class ReloadFailed(Exception):
    """The configuration could not be read or applied; nothing changed."""


@dataclass(frozen=True)
class Loaded:
    """A freshly read configuration: the core's, the admin token, the driver's keys."""

    config: ProxyConfig
    #: The configured admin token (``None``: none configured, or no admin API).
    admin_token: str | None
    #: Every driver key with its value (defaults included).
    driver: Mapping[str, Any]


class TokenHolder(Protocol):
    """What holds the admin token (:class:`~wspipe_anyio.admin.AdminServer`)."""

    def rotate_token(self, token: str) -> None:
        """Accept ``token`` from now on, and refuse the previous one."""
        ...


class Reconfigurable(Protocol):
    """The proxy side (:class:`~wspipe_anyio.ProxyServer`)."""

    def reconfigure(self, config: ProxyConfig) -> Plan:
        """Apply ``config`` live; raise ``ConfigError`` (nothing changed) if it cannot."""
        ...


@dataclass(frozen=True)
class ReloadReport:
    """What a reload did."""

    #: Keys whose new values are in effect.
    applied: tuple[str, ...] = ()
    #: One line per key that changed but needs a restart (left as it was).
    restart_required: tuple[str, ...] = ()
    #: Backend entries registered, and drained with migrate.
    backends_added: tuple[str, ...] = ()
    backends_removed: tuple[str, ...] = ()

    def json(self) -> dict[str, Any]:
        """The answer of ``POST /reload``."""
        return {"applied": list(self.applied), "restart_required": list(self.restart_required),
                "backends_added": list(self.backends_added),
                "backends_removed": list(self.backends_removed)}


@dataclass
class Reloader:
    """Re-reads and applies the configuration of a running ``wspipe serve``.

    :param server: The proxy.
    :param load: Reads the configuration again (raises on anything invalid).
    :param running: What start-up read.
    :param admin: The admin listener, whose token a reload rotates (set once it runs).
    :param on_result: Told ``applied`` or ``failed`` after each reload (metrics).
    """

    server: Reconfigurable
    load: Callable[[], Loaded]
    running: Loaded
    admin: TokenHolder | None = None
    on_result: Callable[[str], None] | None = None
    reloads: int = field(default=0)

    def reload(self) -> ReloadReport:
        """Re-read and apply the configuration; what changed.

        :raises ReloadFailed: It cannot be read or applied (logged); nothing changed.
        """
        try:
            new = self.load()  # a bad file, value or token file: nothing read yet
        except Exception as exc:
            raise self._failed(exc) from None
        try:
            change = self.server.reconfigure(new.config)
        except ConfigError as exc:  # the plan cannot apply: the core changed nothing
            raise self._failed(exc) from None
        applied = [c.key for c in change.live]
        restart = change.restart_lines()
        old = self.running
        token_changed = new.admin_token is not None and new.admin_token != old.admin_token
        if token_changed and self.admin is not None:
            assert new.admin_token is not None
            self.admin.rotate_token(new.admin_token)
            applied.append("admin_token")
        for key in sorted(set(old.driver) | set(new.driver)):
            before, after = old.driver.get(key), new.driver.get(key)
            if key not in LIVE_DRIVER_KEYS and before != after:
                restart.append(f"{key}: {before!r} -> {after!r} needs a restart; "
                               f"still {before!r}")
        # What runs now: the new live values, the old restart-only ones.
        self.running = Loaded(change.config,
                              new.admin_token if token_changed else old.admin_token,
                              {**old.driver, **{k: v for k, v in new.driver.items()
                                                if k in LIVE_DRIVER_KEYS}})
        self.reloads += 1
        self._report("applied")
        for line in restart:
            log.warning("reload: %s", line)
        log.info("reload: %s; %d setting(s) need a restart",
                 f"applied {', '.join(applied)}" if applied else "nothing to apply",
                 len(restart))
        return ReloadReport(tuple(applied), tuple(restart),
                            change.add_backends + change.add_discovered,
                            change.remove_backends + change.remove_discovered)

    def _failed(self, exc: Exception) -> ReloadFailed:
        log.error("reload failed, nothing changed: %s", exc)
        self._report("failed")
        return ReloadFailed(str(exc))

    def _report(self, result: str) -> None:
        if self.on_result is not None:
            self.on_result(result)
