"""The reference frame layer: wsproto's own ``Connection`` in place of the wire.

A proxy built with ``Proxy(wire=WsprotoWire())`` parses and builds the frames of
its open connections with plain wsproto, as it did before the wire existed; the
differential tests run the same streams through both and require the same result.
"""

from __future__ import annotations

from typing import Any

from wsproto import ConnectionType
from wsproto.connection import Connection

from ..wire import Wire


class WsprotoWire(Wire):
    """A :class:`~wspipe_core.wire.Wire` whose connections are wsproto's ``Connection``."""

    __slots__ = ()

    def connection(self, client: bool, trailing: bytes = b"") -> Any:
        """wsproto's connection for the data phase (``client``: we are the client)."""
        return Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER,
                          trailing_data=trailing)
