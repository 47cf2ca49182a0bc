"""The admin package's one exception."""

from __future__ import annotations


class AdminConfigError(ValueError):
    """The admin listener cannot start with these settings (e.g. no token off loopback)."""
