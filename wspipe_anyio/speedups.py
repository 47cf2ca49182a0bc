"""What makes the server fast on this installation: C masking when websockets provides
it, and a C library heap that keeps freed memory for reuse (glibc)."""

from __future__ import annotations

import ctypes
import logging
import os

from wspipe_core.masking import Masker
from wspipe_core.wire import Wire


def c_masker() -> Masker | None:
    """``websockets.speedups.apply_mask`` (C), or ``None`` where it is not built."""
    try:
        from websockets.speedups import apply_mask
    except ImportError:  # no C extension for this platform: the pure-Python masker
        return None
    return apply_mask


def fast_wire() -> Wire:
    """The :class:`~wspipe_core.wire.Wire` the server runs on."""
    return Wire(c_masker())


#: Free bytes at the top of glibc's heap kept for reuse rather than given back to the
#: OS (``M_TRIM_THRESHOLD``; glibc's default is 128 KiB, raised as it goes).
TRIM_THRESHOLD = 32 * 1024 * 1024
_M_TRIM_THRESHOLD = -1


def tune_malloc() -> bool:
    """Set glibc's ``M_TRIM_THRESHOLD`` to :data:`TRIM_THRESHOLD`; whether it was set.

    Relaying large messages allocates and frees buffers of up to a read (256 KiB) many
    times a second; with glibc's adaptive default, the heap's top is given back to the
    OS and faulted in again over and over, which can settle into costing half again as
    much CPU per message (docs/decisions.md). Not set where the C library is not glibc
    (no ``mallopt``, or one that refuses), nor when the operator set glibc's own
    ``MALLOC_TRIM_THRESHOLD_``. ``wspipe serve`` calls it; a program embedding the
    server may.
    """
    if "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if applied:
        logging.getLogger("wspipe.driver").debug(
            "malloc: trim threshold set to %d bytes", TRIM_THRESHOLD)
    return applied
