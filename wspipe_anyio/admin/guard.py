"""Who may drive the admin API: the checks every request but a probe passes, in order.

1. ``Host`` must name this listener (DNS rebinding): ``localhost``, ``127.0.0.1``,
   ``::1``, the host it was bound to, the address the peer connected to, or an
   ``--admin-allow-host`` entry; else **421**. The port is not compared for the
   built-in names (tunnels and port-forwards change it; the name is what a
   rebinding page cannot choose).
2. ``Origin``, when present, must be the request's own origin (``http://`` or
   ``https://`` plus its ``Host``) or an ``--admin-allow-origin`` entry; else
   **403**. Absent is fine (CLI, curl, probes and scrapers send none).
3. ``Authorization: Bearer <token>``: none or not bearer **401**, wrong **403**
   (constant-time comparison).
4. (after routing) a ``POST`` or any request with a body must be
   ``Content-Type: application/json``; else **415**.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from .errors import AdminConfigError
from .http import Request, error, printable

#: Names every admin listener answers to.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: Hosts a listener bound to them has no name of (the peer's local address is used).
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_host(name: str) -> str:
    """A host name or address in one spelling: lower case, no brackets or final dot,
    IP addresses compressed (an IPv4-mapped IPv6 address as IPv4)."""
    name = name.strip().strip("[]").rstrip(".").lower()
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def parse_authority(value: str) -> tuple[str, int | None]:
    """``(host, port)`` of ``name``, ``name:port``, ``[v6]`` or ``[v6]:port``.

    :raises ValueError: Not of that shape.
    """
    value = value.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"malformed host {value!r}")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_ = value.partition(":")
        if ":" in port_text_:
            raise ValueError(f"malformed host {value!r} (an IPv6 address needs brackets)")
        port_text = port_text_ if sep else None
    if not host or any(c in host for c in "/\\@?# \t") or any(ord(c) < 33 for c in host):
        raise ValueError(f"malformed host {value!r}")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"malformed port in {value!r}")
        port = int(port_text)
    return normalize_host(host), port


def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` in one spelling (default port dropped), or ``None`` for
    anything that is not an http(s) origin (``null`` included)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname \
            or parts.username is not None or parts.path not in ("", "/") \
            or parts.query or parts.fragment:
        return None
    scheme = parts.scheme.lower()
    host = normalize_host(parts.hostname)
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" if port in (None, _DEFAULT_PORTS[scheme]) \
        else f"{scheme}://{host}:{port}"


def allowed_hosts(entries: Iterable[str]) -> tuple[tuple[str, int | None], ...]:
    """Validate ``--admin-allow-host`` entries (``name`` or ``name:port``).

    :raises AdminConfigError: A malformed entry, or ``*``.
    """
    out = []
    for entry in entries:
        if entry.strip() == "*":
            raise AdminConfigError("admin_allow_host: '*' would let any web page drive the "
                                   "admin API through DNS rebinding; list the names")
        try:
            out.append(parse_authority(entry))
        except ValueError as exc:
            raise AdminConfigError(f"admin_allow_host: {exc}") from None
    return tuple(out)


def allowed_origins(entries: Iterable[str]) -> frozenset[str]:
    """Validate ``--admin-allow-origin`` entries (``https://dashboard.example:8443``).

    :raises AdminConfigError: Not an http(s) origin (``*`` and ``null`` included).
    """
    out = set()
    for entry in entries:
        origin = normalize_origin(entry)
        if origin is None:
            raise AdminConfigError(f"admin_allow_origin: {entry!r} is not an origin "
                                   "(scheme://host[:port], http or https)")
        out.add(origin)
    return frozenset(out)


class Guard:
    """The Host, Origin, token and Content-Type checks of one admin listener.

    :param token: The bearer token every request but a probe needs.
    :param bind_host: The host the listener was bound to (one of its names).
    :param hosts: Extra ``Host`` names (``--admin-allow-host``), as strings.
    :param origins: Extra origins (``--admin-allow-origin``), as strings.
    :raises AdminConfigError: An empty token or a malformed entry.
    """

    def __init__(self, token: str, *, bind_host: str = "127.0.0.1",
                 hosts: Iterable[str] = (), origins: Iterable[str] = ()) -> None:
        if not token.strip():
            raise AdminConfigError("the admin token is empty")
        self._token = token.encode()
        names = set(LOOPBACK_NAMES)
        if bind_host.strip("[]") not in WILDCARDS:
            names.add(normalize_host(bind_host))
        self._names = frozenset(names)
        self._hosts = allowed_hosts(hosts)
        self._origins = allowed_origins(origins)

    def rotate(self, token: str) -> None:
        """Accept ``token`` from now on; the previous one gets 403 (a reload).

        :raises AdminConfigError: An empty token.
        """
        if not token.strip():
            raise AdminConfigError("the admin token is empty")
        self._token = token.encode()

    def check(self, request: Request) -> None:
        """Host, then Origin, then the token.

        :raises Reply: 421, 403, 401 or 403, with a ``detail`` saying why.
        """
        self.check_site(request)
        self._check_token(request)

    def check_site(self, request: Request) -> None:
        """Host, then Origin (what the console's page needs: it holds no data).

        :raises Reply: 421 or 403, with a ``detail`` saying why.
        """
        host = self._check_host(request)
        self._check_origin(request, host)

    def _check_host(self, request: Request) -> tuple[str, int | None]:
        raw = request.header(b"host")
        if raw is None:
            raise error(421, "no Host header: send the admin listener's address as Host")
        text = raw.decode("latin-1")
        try:
            host, port = parse_authority(text)
        except ValueError:
            raise error(421, f"malformed Host header {printable(text, 100)!r}") from None
        if host in self._names or (request.local and host == normalize_host(request.local)):
            return host, port
        if any(host == name and (allowed is None or allowed == (port or 80))
               for name, allowed in self._hosts):
            return host, port
        raise error(421, f"Host {printable(text, 100)!r} is not a name of this admin listener "
                         "(DNS rebinding?); allow it with --admin-allow-host")

    def _check_origin(self, request: Request, host: tuple[str, int | None]) -> None:
        raw = request.header(b"origin")
        if raw is None:
            return
        text = raw.decode("latin-1")
        origin = normalize_origin(text)
        if origin is not None:
            if origin in self._origins:
                return
            name, port = host
            shown = f"[{name}]" if ":" in name else name
            for scheme, default in _DEFAULT_PORTS.items():
                own = f"{scheme}://{shown}" if port in (None, default) \
                    else f"{scheme}://{shown}:{port}"
                if origin == own:
                    return
        raise error(403, f"cross-origin request from {printable(text, 100)!r} refused; "
                         "allow the origin with --admin-allow-origin")

    def _check_token(self, request: Request) -> None:
        challenge = [("www-authenticate", 'Bearer realm="wspipe-admin"')]
        header = request.header(b"authorization")
        if header is None:
            raise error(401, "missing token: send Authorization: Bearer <token>",
                        headers=challenge)
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            raise error(401, "malformed Authorization header: expected Bearer <token>",
                        headers=challenge)
        if not hmac.compare_digest(given.strip(), self._token):
            raise error(403, "invalid token")

    @staticmethod
    def check_content_type(request: Request) -> None:
        """A ``POST``, or any request with a body, must carry JSON.

        A body-less ``DELETE`` needs no ``Content-Type``: browsers never send a
        cross-origin ``DELETE`` without a preflight, which this API never approves.

        :raises Reply: 415.
        """
        if request.method != "POST" and not request.has_body:
            return
        raw = request.header(b"content-type")
        media = (raw or b"").split(b";", 1)[0].strip().lower()
        if media != b"application/json":
            shown = "none" if raw is None else repr(printable(raw.decode("latin-1"), 100))
            raise error(415, f"Content-Type must be application/json, got {shown}",
                        headers=[("accept-post", "application/json")])
