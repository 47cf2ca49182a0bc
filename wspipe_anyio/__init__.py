"""wspipe_anyio: the I/O driver of wspipe, on asyncio or trio through anyio.

:class:`ProxyServer` runs a :class:`wspipe_core.Proxy` over real sockets: it
accepts clients (optionally over TLS), dials backends (``ws://`` and ``wss://``),
wakes the core's timers and executes the actions it returns. It makes no proxy
decision of its own. It implements :class:`ProxyControl`, the public control
interface the admin API (:mod:`wspipe_anyio.admin`) drives, and owns the proxy's
metrics (:mod:`wspipe_anyio.metrics`). ``python -m wspipe_anyio serve`` is the
command-line face.
"""

from __future__ import annotations

from .control import ProxyControl
from .server import Address, ProxyServer
from .tls import backend_context, server_context

__all__ = ["Address", "ProxyControl", "ProxyServer", "backend_context", "server_context"]
