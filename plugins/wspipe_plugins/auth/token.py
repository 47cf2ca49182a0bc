"""``token``: static bearer tokens or API keys.

The token is read from ``Authorization: Bearer <token>`` (or another header holding
the key itself, e.g. ``x-api-key``), else from the ``access_token`` query parameter.
No credentials: HTTP 401. Credentials that match no configured token: HTTP 403.
Tokens are compared in constant time (``hmac.compare_digest`` over SHA-256 digests,
against every token, so neither a token's length nor its position leaks)::

    [plugins.token]
    tokens = ["s3cret-1", "s3cret-2"]     # and/or:
    tokens_file = "/etc/wspipe/tokens"    # one token per line; '#' comments
    header = "authorization"              # or "x-api-key"; "" for none
    query_param = "access_token"          # "" for none
    strip_query = true                    # don't forward the token to backends
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

import pluggy

from wspipe_core import (
    BackendRequest,
    ConfigError,
    ProxyConfig,
    Reject,
    RequestInfo,
    hookimpl,
)

from .._settings import Settings, activate
from ._credentials import CredentialSource, MalformedCredentials, source_from

NAME = "token"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenAuth:
    """Accept clients that present one of ``tokens``.

    :param tokens: The accepted tokens (at least one).
    :param source: Where the token is looked for.
    """

    def __init__(self, tokens: Iterable[str], source: CredentialSource | None = None) -> None:
        self._digests = [_digest(t) for t in tokens if t]
        if not self._digests:
            raise ConfigError(f"[plugins.{NAME}] tokens: at least one non-empty token is needed")
        self.source = source or CredentialSource()

    def matches(self, token: str) -> bool:
        """Whether ``token`` is one of the accepted tokens (constant time)."""
        candidate = _digest(token)
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(candidate, digest)
        return found

    @hookimpl
    def wspipe_authenticate(self, request: RequestInfo) -> Reject | None:
        try:
            token = self.source.find(request)
        except MalformedCredentials as exc:
            return Reject(401, str(exc))
        if token is None:
            return Reject(401, f"credentials required: {self.source.describe()}")
        if not self.matches(token):
            return Reject(403, "invalid token")
        return None

    @hookimpl
    def wspipe_backend_request(self, request: BackendRequest) -> BackendRequest | None:
        return self.source.strip(request)


def read_tokens_file(path: str) -> list[str]:
    """Tokens from a file: one per line; blank lines and ``#`` comments are skipped."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError as exc:
        raise ConfigError(f"[plugins.{NAME}] tokens_file: cannot read {path}: "
                          f"{exc.strerror or exc}") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def from_settings(settings: Settings) -> TokenAuth:
    """A :class:`TokenAuth` from a ``[plugins.token]`` table."""
    tokens = list(settings.strings("tokens"))
    path = settings.text("tokens_file", None)
    if path:
        tokens += read_tokens_file(path)
    source = source_from(settings)
    settings.done()
    return TokenAuth(tokens, source)


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register a :class:`TokenAuth` configured from ``[plugins.token]``."""
    activate(pm, NAME, from_settings(Settings.of(config, NAME)))


@hookimpl
def wspipe_reconfigure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Take the reloaded ``[plugins.token]`` table: new tokens, a re-read ``tokens_file``.

    Tokens that are no longer listed are refused from the next client on; clients
    already connected stay. A table that cannot be read keeps the running tokens.
    """
    running = pm.get_plugin(f"{NAME}:{TokenAuth.__name__}")
    if isinstance(running, TokenAuth):
        fresh = from_settings(Settings.of(config, NAME))
        running._digests, running.source = fresh._digests, fresh.source
