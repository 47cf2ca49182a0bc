"""The plugin manager factory and a typed facade over ``pm.hook``."""

from __future__ import annotations

import importlib
import logging
import random
from collections.abc import Iterable, Sequence
from typing import Any

import pluggy

from . import hookspecs
from .builtin import (
    STRATEGIES,
    BufferPolicy,
    ExponentialBackoff,
    FixedBackoff,
    UUIDClientId,
)
from .config import ProxyConfig
from .errors import ConfigError
from .info import (
    BackendInfo,
    BackendRequest,
    BufferFullAction,
    PipeEvent,
    PipeInfo,
    Reject,
    RequestInfo,
)

log = logging.getLogger("wspipe.plugins")

#: Entry-point group third-party plugins register under.
ENTRYPOINT_GROUP = "wspipe"

#: Names of the built-in plugins (block one to replace it entirely).
BUILTIN_NAMES = ("wspipe.client_id", "wspipe.strategy", "wspipe.backoff", "wspipe.buffer_policy")


def make_plugin_manager(
    config: ProxyConfig,
    *,
    plugins: Iterable[object | str] = (),
    load_entrypoints: bool = False,
    blocked: Iterable[str] = (),
) -> pluggy.PluginManager:
    """Build a plugin manager with the specs, the built-ins and the given plugins.

    :param config: Chooses the built-in strategy, backoff and buffer policy.
    :param plugins: Plugin objects or importable module paths, registered after the
        built-ins (so they win).
    :param load_entrypoints: Also load plugins from the ``wspipe`` entry-point group.
    :param blocked: Plugin names not to register (built-in or entry-point names).
    :raises ConfigError: A plugin fails to import, its strategy name is unknown, or it
        implements a hook that does not exist.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    strategy = STRATEGIES.get(config.strategy)
    if strategy is None:
        raise ConfigError(
            f"unknown strategy {config.strategy!r}; built-in: {', '.join(sorted(STRATEGIES))}")
    backoff: object = (ExponentialBackoff(config.backoff_base, config.backoff_max)
                       if config.backoff == "exponential" else FixedBackoff(config.backoff_base))
    builtins: list[tuple[str, object]] = [
        ("wspipe.client_id", UUIDClientId()),
        ("wspipe.strategy", strategy()),
        ("wspipe.backoff", backoff),
        ("wspipe.buffer_policy", BufferPolicy(BufferFullAction(config.buffer_policy))),
    ]
    for name, plugin in builtins:
        if not pm.is_blocked(name):
            pm.register(plugin, name=name)
    if load_entrypoints:
        try:
            pm.load_setuptools_entrypoints(ENTRYPOINT_GROUP)
        except Exception as exc:
            raise ConfigError(f"cannot load entry-point plugins: {exc}") from None
    for plugin in plugins:
        register_plugin(pm, plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigError(f"plugin {pm.get_name(exc.plugin)!r}: {exc}") from None
    return pm


def register_plugin(pm: pluggy.PluginManager, plugin: object | str) -> None:
    """Register a plugin object, or import a module path and register the module."""
    name: str | None = None
    if isinstance(plugin, str):
        name = plugin
        if pm.is_blocked(name) or pm.has_plugin(name):
            return
        try:
            plugin = importlib.import_module(plugin)
        except Exception as exc:
            raise ConfigError(f"cannot import plugin {name!r}: {exc}") from None
    try:
        pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise ConfigError(f"plugin {name or plugin!r}: {exc}") from None


class Hooks:
    """Typed, exception-safe calls of the ``wspipe`` hooks (keyword arguments only)."""

    def __init__(self, pm: pluggy.PluginManager, config: ProxyConfig) -> None:
        self.pm = pm
        self._hook: Any = pm.hook
        self._config = config

    def configure(self) -> None:
        """Call ``wspipe_configure``; exceptions propagate (start-up must stop)."""
        self._hook.wspipe_configure(config=self._config)

    def client_id(self, request: RequestInfo) -> str | None:
        try:
            result = self._hook.wspipe_client_id(request=request)
        except Exception:
            log.exception("wspipe_client_id raised; refusing the client")
            return None
        return result if isinstance(result, str) and result else None

    def authenticate(self, request: RequestInfo, client_id: str) -> Reject | None:
        try:
            result = self._hook.wspipe_authenticate(request=request, client_id=client_id)
        except Exception:
            log.exception("wspipe_authenticate raised; refusing the client with 500")
            return Reject(500, "authentication failed with an internal error")
        return result if isinstance(result, Reject) else None

    def select_backend(
        self, pipe: PipeInfo, candidates: Sequence[BackendInfo], rng: random.Random
    ) -> BackendInfo | None:
        try:
            result = self._hook.wspipe_select_backend(pipe=pipe, candidates=candidates, rng=rng)
        except Exception:
            log.exception("wspipe_select_backend raised; no backend chosen")
            return None
        if result is None:
            return None
        if not isinstance(result, BackendInfo) or all(b.id != result.id for b in candidates):
            log.error("wspipe_select_backend returned %r, not a candidate; ignored", result)
            return None
        return result

    def backoff(self, pipe: PipeInfo, attempt: int, rng: random.Random) -> float:
        try:
            result = self._hook.wspipe_backoff(pipe=pipe, attempt=attempt, rng=rng)
        except Exception:
            log.exception("wspipe_backoff raised; using backoff_base")
            result = None
        if not isinstance(result, int | float) or result < 0:
            return self._config.backoff_base
        return float(result)

    def buffer_full(
        self, pipe: PipeInfo, message_size: int, limit: int, reason: str
    ) -> BufferFullAction:
        try:
            result = self._hook.wspipe_buffer_full(
                pipe=pipe, message_size=message_size, limit=limit, reason=reason)
        except Exception:
            log.exception("wspipe_buffer_full raised; closing the client")
            return BufferFullAction.CLOSE
        return result if isinstance(result, BufferFullAction) else BufferFullAction.CLOSE

    def backend_request(
        self, pipe: PipeInfo, backend: BackendInfo, request: BackendRequest
    ) -> BackendRequest:
        try:
            result = self._hook.wspipe_backend_request(pipe=pipe, backend=backend, request=request)
        except Exception:
            log.exception("wspipe_backend_request raised; sending the request unchanged")
            return request
        return result if isinstance(result, BackendRequest) else request

    def pipe_event(self, event: PipeEvent) -> None:
        try:
            self._hook.wspipe_pipe_event(event=event)
        except Exception:
            log.exception("wspipe_pipe_event raised; ignored")
