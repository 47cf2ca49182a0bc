"""Wiring the admin listener into ``wspipe serve``: flags, config keys, validation, lifetime.

The admin keys are driver keys (they configure a listener, not the proxy). How
fast a drain with migrate moves pipes is the core's ``migrate_rate``, a
:class:`wspipe_core.ProxyConfig` key that works with or without ``--admin``.

With no token configured (loopback only) :func:`admin_options` generates one and
checks, before anything starts, that it can be kept in a private file
(:mod:`.tokens`); :func:`open_admin` writes it there once the port is bound.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..control import ProxyControl
from ..units import parse_address
from .errors import AdminConfigError
from .guard import allowed_hosts, allowed_origins
from .http import is_loopback
from .routes import AdminServer
from .tokens import generate_token, prepare_token_directory

#: Config-file keys (and ``serve`` flags) of the admin listener; driver keys, not core ones.
ADMIN_KEYS = frozenset({"admin", "admin_token", "admin_token_file", "admin_allow_host",
                        "admin_allow_origin"})
#: Their defaults: no admin listener.
ADMIN_DEFAULTS: dict[str, Any] = {"admin": None, "admin_token": None, "admin_token_file": None,
                                  "admin_allow_host": None, "admin_allow_origin": None}
#: Environment variable holding the admin token (keeps it out of ``ps`` and config files).
TOKEN_ENV = "WSPIPE_ADMIN_TOKEN"
#: Port of ``--admin HOST`` given without one.
DEFAULT_PORT = 9090


@dataclass(frozen=True)
class AdminOptions:
    """A validated admin listener configuration."""

    host: str
    port: int
    token: str | None
    #: Where the token is written once the port is bound (set when it was generated).
    token_dir: Path | None = None
    #: More ``Host`` names the listener answers to (``--admin-allow-host``).
    allowed_hosts: tuple[str, ...] = ()
    #: Origins allowed besides the request's own (``--admin-allow-origin``).
    allowed_origins: tuple[str, ...] = ()

    @property
    def generated(self) -> bool:
        """Whether the token was generated (none was configured)."""
        return self.token_dir is not None

    def __repr__(self) -> str:  # never show the token
        return (f"AdminOptions(host={self.host!r}, port={self.port}, "
                f"token={'***' if self.token else None}, generated={self.generated}, "
                f"allowed_hosts={self.allowed_hosts!r}, "
                f"allowed_origins={self.allowed_origins!r})")


def load_token(token: str | None = None, token_file: str | None = None) -> str | None:
    """The admin token from a value or a file (first line, stripped); ``None`` if neither.

    :raises AdminConfigError: Both given, an unreadable file, or an empty token.
    """
    if token is not None and token_file is not None:
        raise AdminConfigError("give the admin token or a token file, not both")
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as file:
                token = file.readline().strip()
        except OSError as exc:
            raise AdminConfigError(
                f"cannot read admin token file {token_file}: {exc.strerror or exc}") from None
    if token is not None and not token.strip():
        raise AdminConfigError("the admin token is empty")
    return token.strip() if token is not None else None


def add_admin_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--admin``, ``--admin-token``, ``--admin-token-file``, ``--admin-allow-host``
    and ``--admin-allow-origin``."""
    add = parser.add_argument
    add("--admin", metavar="HOST:PORT",
        help="serve the admin API (pool, pipes, drain, /metrics, /healthz, /readyz) here; "
             "off unless given")
    add("--admin-token", metavar="TOKEN",
        help=f"bearer token of the admin API (default ${TOKEN_ENV}); without one a "
             "loopback admin API generates a token into a private file, any other "
             "address refuses to start")
    add("--admin-token-file", metavar="FILE", help="read the admin token from this file")
    add("--admin-allow-host", action="append", metavar="NAME[:PORT]",
        help="another Host name the admin API answers to (e.g. behind a reverse proxy), "
             "repeatable; others get 421")
    add("--admin-allow-origin", action="append", metavar="ORIGIN",
        help="a browser origin allowed to call the admin API besides its own "
             "(https://ops.example), repeatable; others get 403")


def _strings(key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise AdminConfigError(f"{key} must be a string or a list of strings, got {value!r}")


def admin_options(settings: Mapping[str, Any],
                  environ: Mapping[str, str] | None = None) -> AdminOptions | None:
    """Validate the admin keys of merged settings; ``None`` when ``admin`` is not set.

    The token comes from ``admin_token``, else ``admin_token_file``, else
    ``$WSPIPE_ADMIN_TOKEN``; with none on a loopback address one is generated, to be
    written under the directory :func:`~.tokens.prepare_token_directory` finds in
    ``environ``.

    :raises AdminConfigError: Bad address, token, allowed host or origin; no token off
        loopback; no private directory for a generated token.
    """
    environ = os.environ if environ is None else environ
    address = settings.get("admin")
    if address is None or address == "":
        return None
    text = str(address).strip()
    if text.startswith("http://"):
        # The admin CLI's $WSPIPE_ADMIN may be a URL; serve reads the same variable.
        text = text.removeprefix("http://").rstrip("/")
    try:
        host, port = parse_address(text, default_port=DEFAULT_PORT)
    except ValueError as exc:
        raise AdminConfigError(f"admin: {exc}") from None
    token = load_token(settings.get("admin_token"), settings.get("admin_token_file"))
    if token is None and environ.get(TOKEN_ENV):
        token = load_token(environ[TOKEN_ENV])
    if token is None and not is_loopback(host):
        raise AdminConfigError(
            f"refusing to serve the admin API on non-loopback address {host} without a token "
            f"(set --admin-token-file, ${TOKEN_ENV} or --admin-token)")
    hosts = _strings("admin_allow_host", settings.get("admin_allow_host"))
    origins = _strings("admin_allow_origin", settings.get("admin_allow_origin"))
    allowed_hosts(hosts)  # validated now, so that a mistake is a usage error
    allowed_origins(origins)
    token_dir = None
    if token is None:
        token_dir = prepare_token_directory(environ)
        token = generate_token()
    return AdminOptions(host, port, token, token_dir, hosts, origins)


@contextlib.asynccontextmanager
async def open_admin(control: ProxyControl, options: AdminOptions | None,
                     reloader: Callable[[], dict[str, Any]] | None = None, *,
                     reuse_port: bool = False) -> AsyncIterator[AdminServer | None]:
    """Serve the admin API of a started proxy for the duration of the block.

    Yields ``None`` (and does nothing) when ``options`` is ``None``. ``reloader``
    answers ``POST /reload``.
    """
    if options is None:
        yield None
        return
    async with AdminServer(control, host=options.host, port=options.port,
                           token=options.token, token_file_dir=options.token_dir,
                           allowed_hosts=options.allowed_hosts,
                           allowed_origins=options.allowed_origins,
                           reloader=reloader, reuse_port=reuse_port) as admin:
        yield admin
