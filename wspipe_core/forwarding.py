"""What a backend sees: the handshake a link sends, built from the client's request.

The link's request carries the client's path and query appended to the backend
URL's (``forward_target``), the client headers the configuration names
(``forward_headers``, e.g. ``Cookie``, ``Authorization``), ``X-Forwarded-For`` and
``X-Forwarded-Proto``, the client id (``client_id_header``) and the subprotocol
the client asked for (before the client is answered, every one it offered that the
configuration allows; afterwards, the one it got). The ``wspipe_backend_request``
hook may change it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .config import ProxyConfig
from .info import BackendRequest, RequestInfo
from .pool import Backend


def backend_request(config: ProxyConfig, request: RequestInfo, client_id: str,
                    subprotocols: tuple[str, ...], backend: Backend,
                    session: Sequence[tuple[str, str]] = ()) -> BackendRequest:
    """The default handshake of a link to ``backend`` for a client's ``request``.

    ``session`` are the headers that say which session the link continues
    (see :mod:`wspipe_core.delivery`).
    """
    target = backend.address.target
    if config.forward_target:
        base_path, _, base_query = target.partition("?")
        path = base_path.rstrip("/") + request.path if request.path != "/" else base_path
        query = "&".join(q for q in (base_query, request.query) if q)
        target = path + ("?" + query if query else "")
    forward = {h.lower() for h in config.forward_headers}
    headers = [(k, v) for k, v in request.headers if k in forward]
    xff = request.header("x-forwarded-for")
    headers.append(("x-forwarded-for", f"{xff}, {request.peer}" if xff else request.peer))
    headers.append(("x-forwarded-proto", "https" if request.tls else "http"))
    headers.append((config.client_id_header.lower(), client_id))
    headers.extend(session)
    return BackendRequest(target=target, headers=tuple(headers), subprotocols=subprotocols)
