"""The plugin manager factory and a typed facade over ``pm.hook``."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import math
import random
import types
from collections.abc import Iterable, Sequence
from typing import Any

import pluggy

from . import hookspecs
from .builtin import BACKOFF, BUFFER_POLICY, CLIENT_ID, STRATEGY, make_builtins, take_slot
from .codes import Delivery
from .config import ProxyConfig
from .errors import ConfigError
from .info import (
    Accept,
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
BUILTIN_NAMES = (CLIENT_ID, STRATEGY, BACKOFF, BUFFER_POLICY)

#: Distributions whose ``wspipe`` entry points are a catalogue, not loaded at start-up:
#: wspipe's own first-party plugins (``wspipe_plugins``) compete with each other (one
#: strategy, one buffer policy), so each is loaded only when named (``--plugin NAME``).
OPT_IN_DISTRIBUTIONS = frozenset({"wspipe"})

#: Prefix of a plugin spec that blocks a name instead of loading it (``no:wspipe.strategy``).
BLOCK_PREFIX = "no:"


def make_plugin_manager(
    config: ProxyConfig,
    *,
    plugins: Iterable[object | str] = (),
    load_entrypoints: bool = False,
    blocked: Iterable[str] = (),
) -> pluggy.PluginManager:
    """Build a plugin manager with the specs, the built-ins and the given plugins.

    Registration order (later plugins are called first, so they win): the
    built-ins, then the ``wspipe`` entry points of other distributions (with
    ``load_entrypoints``), then ``plugins`` in order. Built-in classes are ``trylast``,
    so the objects of first-party plugins are asked after every other plugin, and the
    built-ins themselves are moved behind them (:func:`builtins_last`): last of all.

    :param config: Chooses the built-in strategy, backoff and buffer policy (see
        :func:`wspipe_core.builtin.make_builtins`).
    :param plugins: Plugin objects, entry-point names (``"weighted"``) or importable
        module paths, registered after the built-ins (see :func:`register_plugin`);
        ``"no:NAME"`` blocks ``NAME`` like ``blocked``.
    :param load_entrypoints: Also load the plugins of the ``wspipe`` entry-point group
        that other distributions install (wspipe's own are loaded only when named).
    :param blocked: Plugin names not to register (built-in, entry-point names or
        module paths), e.g. ``"wspipe.strategy"``.
    :raises ConfigError: A plugin fails to import, the strategy or buffer policy is
        unknown or its settings table is bad, or a plugin implements a hook that does
        not exist (or wraps ``wspipe_pipe_event``); the message names the plugin.
    """
    plugins = list(plugins)
    blocked = [*blocked, *(p[len(BLOCK_PREFIX):] for p in plugins
                           if isinstance(p, str) and p.startswith(BLOCK_PREFIX))]
    plugins = [p for p in plugins if not (isinstance(p, str) and p.startswith(BLOCK_PREFIX))]
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    for name, plugin in make_builtins(config):
        if not pm.is_blocked(name):
            pm.register(plugin, name=name)
    if load_entrypoints:
        for ep in _entry_points():
            if _is_opt_in(ep) or pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
                continue
            _register(pm, _load_entry_point(ep), ep.name)
    for plugin in plugins:
        register_plugin(pm, plugin)
    builtins_last(pm)
    check_plugins(pm)
    return pm


def builtins_last(pm: pluggy.PluginManager) -> None:
    """Re-register the built-ins (those not blocked) so they are asked after every plugin.

    Their hooks are ``trylast``, and pluggy asks ``trylast`` implementations in
    registration order, first registered first; so objects of built-in classes
    registered later (a first-party plugin's, a user's ``trylast`` plugin) would come
    after the built-ins. Called once the plugins are registered and again after
    ``wspipe_configure``, it keeps the built-ins last of all.
    """
    for name in BUILTIN_NAMES:
        plugin = pm.get_plugin(name)
        if plugin is not None:
            pm.unregister(name=name)
            pm.register(plugin, name=name)


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRYPOINT_GROUP))


def _is_opt_in(ep: importlib.metadata.EntryPoint) -> bool:
    dist = getattr(ep, "dist", None)
    return dist is not None and dist.name in OPT_IN_DISTRIBUTIONS


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> object:
    try:
        return ep.load()
    except Exception as exc:
        raise ConfigError(f"cannot load plugin {ep.name!r} ({ep.value}): "
                          f"{type(exc).__name__}: {exc}") from None


def available_plugins() -> list[tuple[str, str, bool]]:
    """Every plugin of the ``wspipe`` entry-point group: (name, target, loaded at start-up).

    The last field is ``False`` for first-party plugins, loaded only when named.
    """
    return [(ep.name, ep.value, not _is_opt_in(ep)) for ep in _entry_points()]


def register_plugin(pm: pluggy.PluginManager, plugin: object | str) -> None:
    """Register a plugin object, an entry-point name or a module path.

    A string is looked up first as a name in the ``wspipe`` entry-point group
    (``"weighted"``), then imported as a module path (``"my_plugins.sticky"``); the
    plugin is registered under that string, so it is also the name that blocks it.
    ``"no:NAME"`` blocks ``NAME`` (it must come before ``NAME`` is registered). A plugin
    already registered (under any name) is skipped. An object of a built-in class
    (``Weighted()``, ``DropOldest()``, ...) takes its family's slot, as the first-party
    plugin of that name would (:func:`wspipe_core.builtin.take_slot`).

    :raises ConfigError: The plugin cannot be imported or loaded, or it implements a
        hook that does not exist; the message names it.
    """
    if not isinstance(plugin, str):
        kind = type(plugin)
        name = (plugin.__name__ if isinstance(plugin, types.ModuleType)
                else f"{kind.__module__}.{kind.__qualname__}")
        if not (pm.is_registered(plugin) or pm.is_blocked(name)):
            take_slot(pm, plugin)  # an object of a built-in class: as if named
            # A second object of the same class gets pluggy's default (unique) name.
            _register(pm, plugin, None if pm.has_plugin(name) else name)
        return
    name = plugin
    if name.startswith(BLOCK_PREFIX):
        pm.set_blocked(name[len(BLOCK_PREFIX):])
        return
    if pm.is_blocked(name) or pm.has_plugin(name):
        return
    ep = next((e for e in _entry_points() if e.name == name), None)
    if ep is not None:
        obj = _load_entry_point(ep)
    else:
        try:
            obj = importlib.import_module(name)
        except Exception as exc:
            raise ConfigError(
                f"cannot import plugin {name!r}: {type(exc).__name__}: {exc}") from None
    if not pm.is_registered(obj):
        _register(pm, obj, name)


def _register(pm: pluggy.PluginManager, plugin: object, name: str | None) -> None:
    shown = name or pm.get_canonical_name(plugin)
    _check_names(plugin, shown)
    try:
        pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise ConfigError(f"plugin {shown!r}: {exc}") from None


def _check_names(plugin: object, name: str) -> None:
    """Refuse attributes named like hooks that are no hook or lack ``@hookimpl``."""
    known = {n for n in dir(hookspecs) if n.startswith(f"{hookspecs.PROJECT}_")}
    for attr in dir(plugin):
        if not attr.startswith(f"{hookspecs.PROJECT}_"):
            continue
        value = getattr(plugin, attr, None)
        if not inspect.isroutine(value):
            continue
        if attr not in known:
            raise ConfigError(f"plugin {name!r} implements unknown hook {attr!r}")
        if not hasattr(value, f"{hookspecs.PROJECT}_impl"):
            raise ConfigError(f"plugin {name!r}: {attr} is not marked with @hookimpl")


#: Hooks whose implementations are each called on their own (see :meth:`Hooks.pipe_event`),
#: so they cannot be wrappers.
ISOLATED_HOOKS = frozenset({"wspipe_pipe_event"})


def check_plugins(pm: pluggy.PluginManager) -> None:
    """Raise :class:`ConfigError` naming a plugin that implements an unknown hook.

    (``pm.check_pending()``, with a message that names the plugin and the hook.) A
    wrapper of ``wspipe_pipe_event`` is refused too: each observer runs on its own.
    """
    for hook_name in sorted(n for n in dir(pm.hook) if n.startswith(f"{hookspecs.PROJECT}_")):
        caller = getattr(pm.hook, hook_name)
        if caller.has_spec():
            if hook_name in ISOLATED_HOOKS:
                for impl in caller.get_hookimpls():
                    if impl.hookwrapper or impl.wrapper:
                        raise ConfigError(
                            f"plugin {impl.plugin_name!r}: {hook_name} cannot be a wrapper "
                            "(each implementation is called on its own)")
            continue
        for impl in caller.get_hookimpls():
            if not impl.optionalhook:
                raise ConfigError(
                    f"plugin {impl.plugin_name!r} implements unknown hook {hook_name!r}")


def describe_plugins(pm: pluggy.PluginManager) -> list[tuple[str, list[str]]]:
    """The registered plugins in the order decision hooks ask them, with their hooks.

    pluggy's order: ``tryfirst`` plugins, then the others last registered first, then
    the ``trylast`` ones (the built-in classes) first registered first, which puts
    the built-ins last (:func:`builtins_last`). A plugin's place is that of its
    decision hooks (``firstresult``); one with none (a module that only has
    ``wspipe_configure``) counts as an ordinary plugin. One ``(name, [hook names])``
    per plugin, for ``wspipe plugins``.
    """
    hooks: dict[int, list[str]] = {}
    tiers: dict[int, int] = {}
    for hook_name in sorted(n for n in dir(pm.hook) if n.startswith(f"{hookspecs.PROJECT}_")):
        caller = getattr(pm.hook, hook_name)
        deciding = caller.spec is not None and caller.spec.opts.get("firstresult", False)
        for impl in caller.get_hookimpls():
            hooks.setdefault(id(impl.plugin), []).append(hook_name)
            if deciding:
                tier = 0 if impl.tryfirst else 2 if impl.trylast else 1
                tiers[id(impl.plugin)] = min(tiers.get(id(impl.plugin), tier), tier)
    registered = [(name, plugin) for name, plugin in pm.list_name_plugin() if plugin is not None]

    def place(item: tuple[int, tuple[str, object]]) -> tuple[int, int]:
        index, (_, plugin) = item
        tier = tiers.get(id(plugin), 1)
        return tier, index if tier == 2 else -index

    return [(name, hooks.get(id(plugin), []))
            for _, (name, plugin) in sorted(enumerate(registered), key=place)]


class Hooks:
    """Typed, exception-safe calls of the ``wspipe`` hooks (keyword arguments only)."""

    def __init__(self, pm: pluggy.PluginManager, config: ProxyConfig) -> None:
        self.pm = pm
        self._hook: Any = pm.hook
        self._config = config

    def configure(self) -> None:
        """Call ``wspipe_configure``; exceptions propagate (start-up must stop).

        Unlike the other hooks, implementations run in registration order (built-ins
        first), so objects they register keep the order in which their plugins were
        given: the later one still wins. Then the built-ins are moved behind the
        objects registered here (:func:`builtins_last`) and every plugin is checked.
        """
        kwargs = {"config": self._config, "pm": self.pm}
        for impl in list(self._hook.wspipe_configure.get_hookimpls()):
            if not (impl.hookwrapper or impl.wrapper):
                impl.function(*(kwargs[name] for name in impl.argnames))
        builtins_last(self.pm)
        check_plugins(self.pm)

    def reconfigure(self, config: ProxyConfig) -> None:
        """Call every ``wspipe_reconfigure``; one that raises is logged, the rest run."""
        self._config = config
        for impl in list(self._hook.wspipe_reconfigure.get_hookimpls()):
            kwargs = {"config": config, "pm": self.pm}
            try:
                impl.function(*(kwargs[name] for name in impl.argnames))
            except Exception:
                log.exception("wspipe_reconfigure of %s raised; it keeps its settings",
                              impl.plugin_name)

    def client_id(self, request: RequestInfo) -> str | None:
        try:
            result = self._hook.wspipe_client_id(request=request)
        except Exception:
            log.exception("wspipe_client_id raised; refusing the client")
            return None
        if not isinstance(result, str) or not result:
            return None
        if not result.isprintable() or result != result.strip():
            # It is sent to backends as a header value: no control characters.
            log.error("wspipe_client_id returned %r, unfit for a header; refusing the client",
                      result)
            return None
        return result

    def authenticate(self, request: RequestInfo, client_id: str) -> Reject | Accept | None:
        try:
            results = self._hook.wspipe_authenticate(request=request, client_id=client_id)
        except Exception:
            log.exception("wspipe_authenticate raised; refusing the client with 500")
            return Reject(500, "authentication failed with an internal error")
        rejects = [r for r in results if isinstance(r, Reject)]
        accepts = [r for r in results if isinstance(r, Accept)]
        return rejects[0] if rejects else accepts[0] if accepts else None

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
        # NaN would be a deadline that never compares due: the pipe would hang for good.
        if not isinstance(result, int | float) or not math.isfinite(result) or result < 0:
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

    def delivery(self, request: RequestInfo, client_id: str) -> Delivery:
        default = Delivery(self._config.delivery)
        try:
            result = self._hook.wspipe_delivery(request=request, client_id=client_id)
        except Exception:
            log.exception("wspipe_delivery raised; using delivery %s", default)
            return default
        if result is None:
            return default
        try:
            return Delivery(result)
        except ValueError:
            log.error("wspipe_delivery returned %r, not a delivery mode; using %s", result,
                      default)
            return default

    def pipe_event(self, event: PipeEvent) -> None:
        """Call every ``wspipe_pipe_event`` implementation, each isolated from the others.

        pluggy stops a call at the first exception; here each implementation is called
        on its own, in pluggy's call order (last registered first, ``tryfirst`` before,
        ``trylast`` after), with the arguments it names, so one that raises is logged
        with its plugin's name and the others still run.
        """
        kwargs = {"event": event}
        for impl in reversed(self._hook.wspipe_pipe_event.get_hookimpls()):
            try:
                impl.function(*(kwargs[name] for name in impl.argnames))
            except Exception:
                log.exception("wspipe_pipe_event of plugin %r raised; ignored",
                              impl.plugin_name)
