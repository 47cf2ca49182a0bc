"""The shared store of a fleet (Redis or Valkey through coredis), run by the driver.

The core asks for leases and registry changes with :class:`wspipe_core.store.StoreAction`
actions and learns the answers as events; :class:`~.runner.StoreRunner` executes them
against :class:`~.redis.RedisStore`. Without ``--store`` none of it runs, and the Redis
client (the ``redis`` extra) is imported only by :mod:`.redis`.
"""

from __future__ import annotations

from .address import StoreAddress, StoreURLError, read_password, redact

__all__ = ["StoreAddress", "StoreURLError", "read_password", "redact"]
