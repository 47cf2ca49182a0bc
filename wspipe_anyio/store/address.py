"""Where the store is: its URL, the password (never logged) and redaction for logs.

``redis://`` and ``rediss://`` name one server; ``redis+sentinel://`` names the
Sentinels that know which server is the primary of a service (Redis HA). No import of
the Redis client here, so that ``wspipe serve`` without ``--store`` works without the
``redis`` extra installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import unquote

#: Schemes ``--store`` takes.
SCHEMES = ("redis", "rediss", "redis+sentinel")
#: The port of a Sentinel named without one.
SENTINEL_PORT = 26379


def _split(url: str) -> tuple[str, str, str, str]:
    """(scheme, userinfo, hosts, path) of ``url``; no validation beyond the ``://``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", "", "", ""
    netloc, slash, path = rest.partition("/")
    netloc = netloc.split("?", 1)[0].split("#", 1)[0]
    userinfo, at, hosts = netloc.rpartition("@")
    return scheme.lower(), userinfo if at else "", hosts, slash + path


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs)."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hosts}{slash}{path}"


class StoreURLError(ValueError):
    """The ``--store`` URL is not one wspipe can use."""


def _host_port(item: str, default: int, url: str) -> tuple[str, int]:
    """``HOST[:PORT]`` or ``[V6]:PORT`` of ``url``'s host list."""
    if item.startswith("["):
        host, bracket, tail = item[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise StoreURLError(f"store URL has a bad IPv6 host: {redact(url)!r}")
        port_text = tail[1:]
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise StoreURLError(f"store URL has no host: {redact(url)!r}")
    if not port_text:
        return host, default
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise StoreURLError(f"store URL needs a numeric port and /DB: {redact(url)!r}")
    return host, int(port_text)


def _db(text: str, url: str) -> int:
    if not text:
        return 0
    if not text.isdigit():
        raise StoreURLError(f"store URL needs a numeric port and /DB: {redact(url)!r}")
    return int(text)


@dataclass(frozen=True)
class StoreAddress:
    """Where the store is and how to log in: parsed from ``redis://``, ``rediss://`` or
    ``redis+sentinel://``.

    With Sentinel, ``sentinels`` lists them and ``service`` is the name they know the
    primary by; ``host`` and ``port`` are then the first Sentinel's (for messages only).
    """

    host: str
    port: int
    db: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str | None = None

    @classmethod
    def parse(cls, url: str, *, password: str | None = None) -> StoreAddress:
        """Parse ``url``; ``password`` (from an environment variable or a file) wins over
        one in the URL. With Sentinel the password is the data nodes' (the Sentinels are
        asked without one).

        :raises StoreURLError: not ``redis://HOST[:PORT][/DB]``, ``rediss://...`` or
            ``redis+sentinel://HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]``.
        """
        scheme, userinfo, hosts, path = _split(url)
        if scheme not in SCHEMES:
            raise StoreURLError(f"store URL must be redis://, rediss:// or redis+sentinel://,"
                                f" got {redact(url)!r}")
        user, colon, secret_text = userinfo.partition(":")
        username = unquote(user) if user else None
        secret = password if password is not None else (
            unquote(secret_text) if colon and secret_text else None)
        parts = path.strip("/").split("/") if path.strip("/") else []
        if scheme != "redis+sentinel":
            if "," in hosts:
                raise StoreURLError(f"store URL names several hosts (that is "
                                    f"redis+sentinel://): {redact(url)!r}")
            host, port = _host_port(hosts, 6379, url)
            if len(parts) > 1:
                raise StoreURLError(f"store URL needs a numeric port and /DB: {redact(url)!r}")
            return cls(host, port, _db(parts[0] if parts else "", url), scheme == "rediss",
                       username, secret)
        sentinels = tuple(_host_port(item, SENTINEL_PORT, url) for item in hosts.split(","))
        if not parts or not parts[0] or len(parts) > 2:
            raise StoreURLError(f"Sentinel store URL must be redis+sentinel://HOST[:PORT]"
                                f"[,HOST[:PORT]...]/SERVICE[/DB]: {redact(url)!r}")
        service = unquote(parts[0])
        db = _db(parts[1] if len(parts) == 2 else "", url)
        return cls(sentinels[0][0], sentinels[0][1], db, False, username, secret,
                   sentinels, service)


def read_password(env: str = "WSPIPE_STORE_PASSWORD", path: str | None = None) -> str | None:
    """The store password from a file (``path``, stripped) or else the environment."""
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    return os.environ.get(env) or None
