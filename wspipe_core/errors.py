"""Exceptions of the core. Peer misbehaviour never raises: it becomes actions."""

from __future__ import annotations


class WspipeError(Exception):
    """Base class of wspipe's exceptions."""


class UsageError(WspipeError):
    """The caller (driver or program) used the core wrongly."""


class ConfigError(WspipeError):
    """A configuration value is invalid; the message names it."""


class BackendError(WspipeError):
    """A pool operation failed (bad URL, unknown backend, already registered)."""


class InvalidBackendURL(BackendError):
    """The URL is not a valid ``ws://`` or ``wss://`` URL."""


class BackendNotAllowed(BackendError):
    """The URL's host is not on the ``backend_allow`` list."""


class BackendAlreadyRegistered(BackendError):
    """The URL is already in the pool."""


class UnknownBackend(BackendError):
    """No backend with that id or URL is in the pool."""
