"""The fastest frame layer this installation has: C masking when websockets provides it."""

from __future__ import annotations

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
