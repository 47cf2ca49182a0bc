"""Masking: the XOR of WebSocket payloads with a 4-byte key, and where keys come from.

The core masks every frame it sends to a backend and unmasks every frame a client
sends it, so masking is the largest per-byte cost of the relay. The function that
does it is a seam (:data:`Masker`): the core ships :func:`python_mask` (pure Python,
standard library only) and the driver injects a C implementation when one is
installed (``websockets.speedups.apply_mask``; see docs/decisions.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable

#: ``mask(data, key) -> bytes``: ``data`` XOR ``key`` repeated, ``key`` 4 bytes long;
#: ``data`` is any bytes-like object (the wire unmasks slices of a read in place).
Masker = Callable[[bytes | bytearray | memoryview, bytes], bytes]

_XOR = [bytes(a ^ b for a in range(256)) for b in range(256)]


def python_mask(data: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """``data`` XOR the 4-byte ``key`` repeated: the pure-Python masker.

    Four ``bytes.translate`` passes over strided slices, each in C: about 40x slower
    than a C loop at 64 KiB, about 5x for small frames.
    """
    if not data:
        return b""
    out = bytearray(data)
    for i in range(4):
        out[i::4] = out[i::4].translate(_XOR[key[i]])
    return bytes(out)


class MaskKeys:
    """Fresh, unpredictable 4-byte masking keys (RFC 6455 5.3), read from the OS in bulk.

    A client-side relay forwards payloads that its clients chose, so its masking
    keys must not be predictable: they come from ``os.urandom``, fetched 1 KiB at a
    time so that a key costs a slice rather than a system call.
    """

    __slots__ = ("_pool", "_pos")

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0

    def next(self) -> bytes:
        """A key never handed out before."""
        pos = self._pos
        if pos >= len(self._pool):
            self._pool, pos = os.urandom(1024), 0
        self._pos = pos + 4
        return self._pool[pos:pos + 4]
