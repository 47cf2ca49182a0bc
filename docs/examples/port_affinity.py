"""port_affinity: send every client to the backend that listens on one port.

Settings, in the config file::

    [plugins.port_affinity]
    port = 9001

When no candidate has that port (it is down, or excluded after a failure) the
plugin has no opinion and the next strategy (the built-in one) decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import pluggy

from wspipe_core import BackendInfo, ConfigError, ProxyConfig, hookimpl


class PortAffinity:
    """Choose the candidate whose URL has the given port."""

    def __init__(self, port: int) -> None:
        self.port = port

    @hookimpl
    def wspipe_select_backend(self, candidates: Sequence[BackendInfo]) -> BackendInfo | None:
        return next((b for b in candidates if urlsplit(b.url).port == self.port), None)


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Read ``[plugins.port_affinity]`` and register a configured PortAffinity."""
    port = config.plugin_settings.get("port_affinity", {}).get("port")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"[plugins.port_affinity] port: expected a TCP port, got {port!r}")
    if not pm.has_plugin("port_affinity:PortAffinity"):
        pm.register(PortAffinity(port), name="port_affinity:PortAffinity")
