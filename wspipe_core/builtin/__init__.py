"""The built-in behaviour, written as ordinary plugins registered ``trylast``."""

from __future__ import annotations

from .backoff import ExponentialBackoff, FixedBackoff
from .buffer_full import BufferPolicy
from .client_id import UUIDClientId
from .strategies import (
    STRATEGIES,
    ConsistentHash,
    Exclusive,
    LeastConnections,
    RoundRobin,
)

__all__ = [
    "STRATEGIES",
    "BufferPolicy",
    "ConsistentHash",
    "Exclusive",
    "ExponentialBackoff",
    "FixedBackoff",
    "LeastConnections",
    "RoundRobin",
    "UUIDClientId",
]
