"""The client side before the upgrade: parsing the request, refusing it over HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus

from wsproto import ConnectionType, WSConnection
from wsproto.events import Request

from .events import ConnId
from .info import RequestInfo


@dataclass(eq=False)
class PendingClient:
    """A client connection whose upgrade request is not complete yet."""

    conn: ConnId
    peer: str
    tls: bool
    #: Must complete its upgrade request by then.
    deadline: float
    ws: WSConnection = field(default_factory=lambda: WSConnection(ConnectionType.SERVER))
    #: Bytes received so far (for the 431 limit).
    received: int = 0
    #: The first bytes received, up to the head limit (to measure the request head).
    start: bytearray = field(default_factory=bytearray)


def http_error(status: int, reason: str) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response with ``reason`` as one-line body.

    Written by hand because it must also answer requests that h11 (and so wsproto)
    could not parse, when no wsproto state machine can produce a response. A 426
    names the version we speak (``Sec-WebSocket-Version: 13``, RFC 6455 4.4).
    """
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    line = " ".join(reason.split())[:200] if reason else phrase
    body = (line + "\n").encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        + ("sec-websocket-version: 13\r\n" if status == 426 else "")
        + "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def request_info(request: Request, peer: str, tls: bool) -> RequestInfo:
    """Build the hook-facing snapshot of a wsproto ``Request``."""
    path, _, query = request.target.partition("?")
    headers = [("host", request.host)]
    for name, value in request.extra_headers:
        key = name.decode("latin-1") if isinstance(name, bytes) else name
        val = value.decode("latin-1") if isinstance(value, bytes) else value
        headers.append((key.lower(), val))
    if request.subprotocols:
        headers.append(("sec-websocket-protocol", ", ".join(request.subprotocols)))
    return RequestInfo(
        target=request.target,
        path=path,
        query=query,
        headers=tuple(headers),
        subprotocols=tuple(request.subprotocols),
        peer=peer,
        tls=tls,
    )


def choose_subprotocol(offered: tuple[str, ...], allowed: tuple[str, ...]) -> str | None:
    """The first subprotocol the client offered that the configuration allows."""
    if "*" in allowed:
        return offered[0] if offered else None
    return next((p for p in offered if p in allowed), None)
