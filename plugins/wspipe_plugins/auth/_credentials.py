"""Finding a bearer token or API key in an upgrade request (header or query parameter)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from wspipe_core import BackendRequest, RequestInfo

from .._settings import Settings

#: RFC 6750 §2.3: the query parameter of a bearer token (browsers cannot set headers
#: on a WebSocket, so this is how they send one).
DEFAULT_QUERY_PARAM = "access_token"


class MalformedCredentials(ValueError):
    """Credentials are present but not in a form we read (e.g. ``Authorization: Basic``)."""


@dataclass(frozen=True, slots=True)
class CredentialSource:
    """Where a token is looked for, in order: the header, then the query parameter.

    :param header: Header name; for ``authorization`` the value must be
        ``Bearer <token>``, for any other header (e.g. ``x-api-key``) the whole value
        is the token. ``None``: no header.
    :param query_param: Query parameter name; ``None``: no query parameter.
    :param strip_query: Remove the query parameter from the target forwarded to the
        backend (so the secret reaches neither the backend nor its access log).
    """

    header: str | None = "authorization"
    query_param: str | None = DEFAULT_QUERY_PARAM
    strip_query: bool = True

    def find(self, request: RequestInfo) -> str | None:
        """The token, or ``None`` if the request carries none.

        :raises MalformedCredentials: The header is present but unusable.
        """
        if self.header:
            value = request.header(self.header)
            if value is not None:
                value = value.strip()
                if self.header.lower() == "authorization":
                    scheme, _, token = value.partition(" ")
                    if scheme.lower() != "bearer" or not token.strip():
                        raise MalformedCredentials("Authorization must be 'Bearer <token>'")
                    return token.strip()
                if value:
                    return value
        if self.query_param:
            for key, value in parse_qsl(request.query, keep_blank_values=True):
                if key == self.query_param and value:
                    return value
        return None

    def describe(self) -> str:
        """How to send credentials, for the 401 body."""
        ways = []
        if self.header:
            ways.append("Authorization: Bearer <token>" if self.header.lower() == "authorization"
                        else f"{self.header} header")
        if self.query_param:
            ways.append(f"?{self.query_param}=")
        return " or ".join(ways)

    def strip(self, request: BackendRequest) -> BackendRequest | None:
        """``request`` without the query parameter, or ``None`` if it has none."""
        if not (self.strip_query and self.query_param):
            return None
        path, sep, query = request.target.partition("?")
        if not sep:
            return None
        pairs = parse_qsl(query, keep_blank_values=True)
        kept = [(k, v) for k, v in pairs if k != self.query_param]
        if len(kept) == len(pairs):
            return None
        target = f"{path}?{urlencode(kept)}" if kept else path
        return dataclasses.replace(request, target=target)


def source_from(settings: Settings) -> CredentialSource:
    """The ``header``, ``query_param`` and ``strip_query`` keys of a settings table."""
    return CredentialSource(
        header=settings.text("header", "authorization") or None,
        query_param=settings.text("query_param", DEFAULT_QUERY_PARAM) or None,
        strip_query=settings.flag("strip_query", True),
    )
