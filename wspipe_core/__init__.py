"""wspipe_core: the sans-IO core of wspipe.

Bytes and events go in (:mod:`wspipe_core.events`), bytes and actions come out
(:mod:`wspipe_core.actions`). Time is always an argument; the core never reads a
clock, opens a socket or sleeps. See docs/architecture.md.
"""

from __future__ import annotations

from . import actions, events
from .codes import CloseCode, Delivery, InterruptionCause, LimitKind, LinkFailure
from .config import ProxyConfig
from .errors import (
    BackendAlreadyRegistered,
    BackendError,
    BackendNotAllowed,
    ConfigError,
    InvalidBackendURL,
    UnknownBackend,
    UsageError,
    WspipeError,
)
from .health import BackendHealth
from .hooks import ENTRYPOINT_GROUP, Hooks, make_plugin_manager
from .hookspecs import hookimpl
from .info import (
    Accept,
    BackendInfo,
    BackendRequest,
    BackendState,
    BufferFullAction,
    MigrationInfo,
    PipeEvent,
    PipeEventKind,
    PipeInfo,
    PipeState,
    Reject,
    RequestInfo,
)
from .proxy import Proxy

__all__ = [
    "ENTRYPOINT_GROUP",
    "Accept",
    "BackendAlreadyRegistered",
    "BackendError",
    "BackendHealth",
    "BackendInfo",
    "BackendNotAllowed",
    "BackendRequest",
    "BackendState",
    "BufferFullAction",
    "CloseCode",
    "ConfigError",
    "Delivery",
    "Hooks",
    "InterruptionCause",
    "InvalidBackendURL",
    "LimitKind",
    "LinkFailure",
    "MigrationInfo",
    "PipeEvent",
    "PipeEventKind",
    "PipeInfo",
    "PipeState",
    "Proxy",
    "ProxyConfig",
    "Reject",
    "RequestInfo",
    "UnknownBackend",
    "UsageError",
    "WspipeError",
    "actions",
    "events",
    "hookimpl",
    "make_plugin_manager",
]
