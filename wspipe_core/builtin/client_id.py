"""Built-in client id: the UUID that ends the request path (``/<uuid>``)."""

from __future__ import annotations

import re

from ..hookspecs import hookimpl
from ..info import RequestInfo

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class UUIDClientId:
    """Client id = the last path segment, if it is a hyphenated UUID (lower-cased)."""

    @hookimpl(trylast=True)
    def wspipe_client_id(self, request: RequestInfo) -> str | None:
        segment = request.path.rstrip("/").rsplit("/", 1)[-1]
        if _UUID.fullmatch(segment):
            return segment.lower()
        return None
