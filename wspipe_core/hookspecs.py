"""The hook specifications of wspipe (pluggy project ``wspipe``).

Every hook runs inside the core, synchronously: it must not block and must not do
I/O (a plugin that needs I/O runs it in its own background task and keeps the
result in memory). Hooks get read-only snapshots, never core objects. Decision
hooks are ``firstresult`` (but ``wspipe_authenticate``, where every check applies):
the first implementation that returns something other than ``None`` decides, and
the built-in behaviour is itself a plugin registered ``trylast`` and asked last of
all, so any user plugin overrides it. An exception raised by a hook is logged and the
safe default described on each hook is used instead; an observer
(``wspipe_pipe_event``) that raises does not keep the other observers from the event.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pluggy

from .config import ProxyConfig
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

PROJECT = "wspipe"
hookspec = pluggy.HookspecMarker(PROJECT)
#: Marker for hook implementations: ``@hookimpl def wspipe_select_backend(...)``.
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Read the configuration once, before the proxy handles anything.

    Every implementation is called. A plugin module that keeps state registers a
    configured object here, once per proxy (pytest's ``pytest_configure`` pattern)::

        @hookimpl
        def wspipe_configure(config, pm):
            pm.register(MyStrategy(config.plugin_settings.get("my", {})), name="my.strategy")

    :param config: The proxy's configuration; a plugin's own settings are in
        ``config.plugin_settings.get(NAME, {})`` (the ``[plugins.NAME]`` table).
    :param pm: The proxy's plugin manager: register or block plugins here.

    Called: once per proxy, when it is constructed, before any other hook, for every
    implementation *in registration order* (unlike other hooks), so the objects
    registered here keep the order their plugins were given in. Raise ``ConfigError``
    to refuse the settings; start-up stops with that message. Plugins registered here
    are checked like the others (unknown hooks stop start-up).
    """


@hookspec
def wspipe_reconfigure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Take new settings on a reload (SIGHUP, ``POST /reload``), without a restart.

    Every implementation is called. A plugin that holds settings it can change live
    (tokens, key files) re-reads its ``[plugins.NAME]`` table here; one that cannot
    leaves it: a restart applies it.

    :param config: The reloaded configuration; a plugin's own settings are in
        ``config.plugin_settings.get(NAME, {})``.
    :param pm: The proxy's plugin manager (find the object ``wspipe_configure``
        registered with ``pm.get_plugin(name)``).

    Called: on every reload (so files named in the settings are re-read even when
    the settings did not change), inside the core, between two events. An exception
    is logged with the plugin's name and the other implementations still run. Must
    not block: read small files only.
    """


@hookspec(firstresult=True)
def wspipe_client_id(request: RequestInfo) -> str | None:
    """Extract the client id from the client's upgrade request.

    Stops at the first non-None result.

    :param request: The upgrade request.
    :returns: The client id, or ``None`` for no opinion. When every implementation
        returns ``None`` (the built-in one does when the path is not ``/<uuid>``)
        the client is refused with HTTP 400.

    Called: once per client, before ``wspipe_authenticate``. On exception: 400.
    Must not block: it runs inside the core.
    """


@hookspec
def wspipe_authenticate(request: RequestInfo, client_id: str) -> Reject | Accept | None:
    """Decide whether the client may connect.

    Every implementation is called (an ``Accept`` does not skip the checks of the
    others): the first :class:`Reject` refuses the client; otherwise the first
    :class:`Accept` names its principal.

    :param request: The upgrade request.
    :param client_id: The id ``wspipe_client_id`` gave.
    :returns: A :class:`Reject` (usually status 401 or 403) to refuse the client; an
        :class:`Accept` naming the client's principal (e.g. a JWT subject: a parked
        session is then resumed only by the same principal); or ``None`` for no
        objection.

    Called: once per client, after the client id is known and before the upgrade
    is accepted. On exception: the client is refused with 500. Must not block: a
    plugin that checks credentials remotely keeps what it learns in memory.
    """


@hookspec(firstresult=True)
def wspipe_select_backend(
    pipe: PipeInfo, candidates: Sequence[BackendInfo], rng: random.Random
) -> BackendInfo | None:
    """Choose the backend for a pipe's next link.

    Stops at the first non-None result.

    :param pipe: The pipe that needs a link.
    :param candidates: Backends that may take it, in registration order: ``up``
        ones (or, when none is up, ``ejected`` ones, so an outage is probed), minus
        the backend that just failed this pipe. Never empty.
    :param rng: The proxy's random source; use it (not ``random``) so tests replay.
    :returns: One of ``candidates``, or ``None`` for no opinion. If every
        implementation returns ``None`` the pipe waits for its backoff and asks again.

    Called: each time a pipe needs a link (open, interruption, migration, retry).
    On exception, or a result not in ``candidates``: treated as ``None``. Must not
    block: it runs inside the core.
    """


@hookspec(firstresult=True)
def wspipe_backoff(pipe: PipeInfo, attempt: int, rng: random.Random) -> float | None:
    """Seconds to wait before a pipe's next link attempt.

    Stops at the first non-None result.

    :param pipe: The pipe.
    :param attempt: Failed attempts in a row so far (1 after the first failure).
    :param rng: The proxy's random source.
    :returns: A delay in seconds (>= 0), or ``None`` for no opinion.

    Called: after each failed link attempt of a pipe, and when no backend could be
    chosen. On exception, or a negative or non-finite result: ``backoff_base`` from
    the configuration. Must not block: return the delay, never sleep.
    """


@hookspec(firstresult=True)
def wspipe_buffer_full(
    pipe: PipeInfo, message_size: int, limit: int, reason: str
) -> BufferFullAction | None:
    """Decide what happens to a client message that does not fit in the buffer.

    Stops at the first non-None result.

    :param pipe: The pipe whose buffer is full.
    :param message_size: Payload bytes of the message (or fragment) that did not fit.
    :param limit: The limit it hit, in bytes.
    :param reason: ``"buffer_limit"`` (the pipe's own limit) or ``"memory_budget"``
        (the process-wide budget).
    :returns: A :class:`BufferFullAction`: ``CLOSE`` (1013 to that client), ``PAUSE``
        (keep the message aside, stop reading the client until the buffer is flushed),
        ``DROP_OLDEST`` (drop the oldest buffered message; the hook is asked again
        until the message fits), or ``None`` for no opinion (if nobody answers: ``CLOSE``).

    Called: each time a client message (or, for in-progress messages, a fragment)
    would take the pipe over a limit. On exception: ``CLOSE``. Must not block: it
    runs inside the core, in the middle of reading the client.
    """


@hookspec(firstresult=True)
def wspipe_backend_request(
    pipe: PipeInfo, backend: BackendInfo, request: BackendRequest
) -> BackendRequest | None:
    """Shape the handshake a link sends to its backend.

    Stops at the first non-None result.

    :param pipe: The pipe the link is for.
    :param backend: The backend being dialed.
    :param request: The handshake wspipe built (target, headers, subprotocol).
    :returns: A replacement :class:`BackendRequest` (e.g. ``dataclasses.replace``
        with extra headers), or ``None`` to send ``request`` unchanged.

    Called: once per link, when its connection is up. On exception: unchanged.
    Must not block: it runs inside the core.
    """


@hookspec(firstresult=True)
def wspipe_delivery(request: RequestInfo, client_id: str) -> str | None:
    """Choose the delivery mode of a new pipe (e.g. by path).

    Stops at the first non-None result.

    :param request: The client's upgrade request.
    :param client_id: The client id.
    :returns: ``"at-most-once"``, ``"at-least-once"`` or ``"acked"`` (a
        :class:`~wspipe_core.Delivery`), or ``None`` for the configured ``delivery``.

    Called: once per pipe, when its upgrade request has passed every check. On
    exception, or an unknown mode: the configured one (logged). Must not block.
    """


@hookspec
def wspipe_pipe_event(event: PipeEvent) -> None:
    """Observe a pipe: opened, linked, interrupted, resumed or closed.

    :param event: What happened, to which pipe, with which backend, when and why.

    Called: at each transition, for logs and metrics, for every implementation, each
    on its own (in pluggy's order: ``tryfirst`` ones, then last registered first,
    then ``trylast`` ones): one that raises is logged with its plugin's name and the
    others still see the event (pluggy itself would stop at the first exception).
    So an implementation cannot be a ``wrapper``/``hookwrapper``: start-up refuses one.
    Must not block: hand slow work (shipping metrics) to a background task of the
    plugin's own.
    """
