"""Where the store is: its URL, the password (never logged) and redaction for logs.

No import of the Redis client here, so that ``wspipe serve`` without ``--store`` works
without the ``redis`` extra installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class StoreURLError(ValueError):
    """The ``--store`` URL is not one wspipe can use."""


@dataclass(frozen=True)
class StoreAddress:
    """Where the store is and how to log in: parsed from ``redis://`` or ``rediss://``."""

    host: str
    port: int
    db: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str, *, password: str | None = None) -> StoreAddress:
        """Parse ``url``; ``password`` (from an environment variable or a file) wins over
        one in the URL.

        :raises StoreURLError: not ``redis://HOST[:PORT][/DB]`` or ``rediss://...``.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise StoreURLError(f"store URL must be redis:// or rediss://, got "
                                f"{redact(url)!r}")
        if not parts.hostname:
            raise StoreURLError(f"store URL has no host: {redact(url)!r}")
        try:
            port = parts.port or 6379
            path = parts.path.strip("/")
            db = int(path) if path else 0
        except ValueError:
            raise StoreURLError(f"store URL needs a numeric port and /DB: {redact(url)!r}"
                                ) from None
        secret = password if password is not None else (
            unquote(parts.password) if parts.password else None)
        return cls(parts.hostname, port, db, parts.scheme == "rediss",
                   unquote(parts.username) if parts.username else None, secret)


def read_password(env: str = "WSPIPE_STORE_PASSWORD", path: str | None = None) -> str | None:
    """The store password from a file (``path``, stripped) or else the environment."""
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    return os.environ.get(env) or None
