"""``jwt``: JSON Web Tokens, verified with PyJWT (``pip install 'wspipe[jwt]'``).

The token is read like the ``token`` plugin reads one (``Authorization: Bearer``, or
``?access_token=``). Its signature is checked with an HMAC secret (HS256/384/512) or a
public key from a PEM file (RS*, PS*, ES*, EdDSA) — never both, so a public key can
never be used as an HMAC secret. Then ``exp`` and ``nbf`` (with ``leeway`` seconds),
``aud`` and ``iss`` (when configured; a token with an ``aud`` is refused if no
audience is configured). No token: HTTP 401; a token that fails any check: HTTP 403.

With ``client_id_claim``, a valid token's claim (e.g. ``sid`` or ``sub``) is the
client id, instead of the ``/<uuid>`` path; note that two connections with the same
client id cannot be live at once (the second gets 409). The ``principal_claim``
(default ``sub``) names who the client is: a parked session is resumed only by a
token with the same value (set it to ``""`` to name no principal)::

    [plugins.jwt]
    algorithms = ["RS256"]                 # default ["HS256"]
    public_key_file = "/etc/wspipe/jwt.pem"  # or secret = "..." / secret_file = "..."
    audience = "wss://chat.example.com"    # string or list
    issuer = "https://auth.example.com"
    leeway = 30                            # seconds of clock skew allowed
    require = ["exp"]                      # claims that must be present (default)
    client_id_claim = "sid"
    principal_claim = "sub"                # default
    header = "authorization"
    query_param = "access_token"
    strip_query = true
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pluggy

try:
    import jwt as pyjwt
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(f"{exc.msg}: the jwt plugin needs pip install 'wspipe[jwt]'") from None

from wspipe_core import (
    Accept,
    BackendRequest,
    ConfigError,
    ProxyConfig,
    Reject,
    RequestInfo,
    hookimpl,
)

from .._settings import Settings, activate
from ._credentials import CredentialSource, MalformedCredentials, source_from

NAME = "jwt"

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
KEY_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                            "ES256", "ES384", "ES512", "EdDSA"})

#: Longest client id taken from a claim.
MAX_CLIENT_ID = 256


def check_algorithms(algorithms: Sequence[str]) -> None:
    """Refuse an empty, unknown or mixed (HMAC with public-key) list of algorithms."""
    if not algorithms or not set(algorithms) <= HMAC_ALGORITHMS | KEY_ALGORITHMS:
        raise ConfigError(f"[plugins.{NAME}] algorithms: choose from "
                          f"{', '.join(sorted(HMAC_ALGORITHMS | KEY_ALGORITHMS))}")
    if set(algorithms) & HMAC_ALGORITHMS and set(algorithms) & KEY_ALGORITHMS:
        raise ConfigError(f"[plugins.{NAME}] algorithms: do not mix HMAC and public-key "
                          "algorithms (a public key must never verify as an HMAC secret)")


class InvalidToken(Exception):
    """The token failed a check; the message says which (it becomes the 403 body)."""


class JWTAuth:
    """Accept clients with a valid JWT.

    :param key: The HMAC secret (``bytes``/``str``) or a public key object (from
        ``cryptography``) matching ``algorithms``.
    :param algorithms: Accepted ``alg`` values, all HMAC or all public-key.
    :param audience: Required ``aud`` (one of them), or ``None``.
    :param issuer: Required ``iss``, or ``None``.
    :param leeway: Seconds of clock skew allowed on ``exp`` and ``nbf``.
    :param require: Claims that must be present.
    :param client_id_claim: Claim whose value becomes the client id, or ``None``.
    :param principal_claim: Claim whose value is the client's principal (a parked
        session resumes only for the same one), or ``None``.
    :param source: Where the token is looked for.
    :param clock: Wall-clock time in seconds (``exp``/``nbf`` are wall-clock times).
    """

    def __init__(
        self,
        key: Any,
        *,
        algorithms: Sequence[str] = ("HS256",),
        audience: str | Sequence[str] | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
        require: Sequence[str] = ("exp",),
        client_id_claim: str | None = None,
        principal_claim: str | None = "sub",
        source: CredentialSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_algorithms(algorithms)
        self.key = key
        self.algorithms = list(algorithms)
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.require = list(require)
        self.client_id_claim = client_id_claim
        self.principal_claim = principal_claim
        self.source = source or CredentialSource()
        self.clock = clock
        #: Prefix of the client ids given to clients without a valid token (unguessable,
        #: so no claim can forge one).
        self._unauthenticated = f"unauthenticated-{secrets.token_hex(8)}-"

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid ``token``.

        :raises InvalidToken: Bad signature or encoding, wrong ``alg``, ``aud`` or
            ``iss``, a required claim missing, expired or not yet valid.
        """
        try:
            claims: dict[str, Any] = pyjwt.decode(
                token, self.key, algorithms=self.algorithms, audience=self.audience,
                issuer=self.issuer,
                # exp/nbf are checked below against self.clock (testable, one clock).
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "require": self.require})
        except pyjwt.ExpiredSignatureError:  # pragma: no cover - verify_exp is off
            raise InvalidToken("token expired") from None
        except pyjwt.InvalidTokenError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        now = self.clock()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if exp is not None:
            if isinstance(exp, bool) or not isinstance(exp, int | float):
                raise InvalidToken("invalid token: exp is not a number")
            if exp <= now - self.leeway:
                raise InvalidToken("token expired")
        if nbf is not None:
            if isinstance(nbf, bool) or not isinstance(nbf, int | float):
                raise InvalidToken("invalid token: nbf is not a number")
            if nbf > now + self.leeway:
                raise InvalidToken("token not yet valid (nbf)")
        return claims

    @hookimpl
    def wspipe_client_id(self, request: RequestInfo) -> str | None:
        if self.client_id_claim is None:
            return None
        try:
            token = self.source.find(request)
            if token is None:
                raise InvalidToken("no token")
            claims = self.verify(token)
        except (MalformedCredentials, InvalidToken):
            # Not None: that would refuse the client with 400 (no client id) before
            # wspipe_authenticate could answer 401/403. This id is always refused there.
            return f"{self._unauthenticated}{uuid.uuid4()}"
        value = claims.get(self.client_id_claim)
        if value is None or isinstance(value, dict | list | bool):
            return None
        client_id = str(value)
        if not client_id or len(client_id) > MAX_CLIENT_ID or not client_id.isprintable():
            return None
        return client_id

    @hookimpl
    def wspipe_authenticate(self, request: RequestInfo, client_id: str) -> Reject | Accept | None:
        try:
            token = self.source.find(request)
        except MalformedCredentials as exc:
            return Reject(401, str(exc))
        if token is None:
            return Reject(401, f"token required: {self.source.describe()}")
        try:
            claims = self.verify(token)
        except InvalidToken as exc:
            return Reject(403, str(exc).splitlines()[0])
        if client_id.startswith(self._unauthenticated):
            return Reject(403, "invalid token")  # became valid in between (nbf): still no
        principal = claims.get(self.principal_claim) if self.principal_claim else None
        if principal is None or isinstance(principal, dict | list | bool):
            return None
        return Accept(str(principal))

    @hookimpl
    def wspipe_backend_request(self, request: BackendRequest) -> BackendRequest | None:
        return self.source.strip(request)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ConfigError(f"[plugins.{NAME}] {what}: cannot read {path}: "
                          f"{exc.strerror or exc}") from None


def load_key(settings: Settings, algorithms: Sequence[str]) -> Any:
    """The verification key named by ``secret``, ``secret_file`` or ``public_key_file``."""
    secret = settings.text("secret", None)
    secret_file = settings.text("secret_file", None)
    key_file = settings.text("public_key_file", None)
    if set(algorithms) <= HMAC_ALGORITHMS:
        if key_file or bool(secret) == bool(secret_file):
            raise ConfigError(f"[plugins.{NAME}] HMAC algorithms need exactly one of "
                              "secret or secret_file (and no public_key_file)")
        return secret.encode() if secret else _read(str(secret_file), "secret_file").strip()
    if not key_file or secret or secret_file:
        raise ConfigError(f"[plugins.{NAME}] public-key algorithms need public_key_file "
                          "(and no secret)")
    try:
        return load_pem_public_key(_read(key_file, "public_key_file"))
    except ValueError as exc:
        raise ConfigError(f"[plugins.{NAME}] public_key_file: {key_file} is not a PEM "
                          f"public key: {exc}") from None


def from_settings(settings: Settings) -> JWTAuth:
    """A :class:`JWTAuth` from a ``[plugins.jwt]`` table."""
    algorithms = settings.strings("algorithms", ("HS256",))
    check_algorithms(algorithms)
    key = load_key(settings, algorithms)
    audience: str | tuple[str, ...] | None = None
    if "audience" in settings:
        audience = settings.strings("audience")
        audience = audience[0] if len(audience) == 1 else audience
    auth = JWTAuth(
        key, algorithms=algorithms, audience=audience,
        issuer=settings.text("issuer", None), leeway=settings.number("leeway", 0.0),
        require=settings.strings("require", ("exp",)),
        client_id_claim=settings.text("client_id_claim", None) or None,
        principal_claim=settings.text("principal_claim", "sub") or None,
        source=source_from(settings))
    settings.done()
    return auth


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register a :class:`JWTAuth` configured from ``[plugins.jwt]``."""
    activate(pm, NAME, from_settings(Settings.of(config, NAME)))


@hookimpl
def wspipe_reconfigure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Take the reloaded ``[plugins.jwt]`` table: a re-read ``secret_file`` or
    ``public_key_file`` (key rotation), new algorithms, audience, issuer, claims.

    Tokens signed with a key no longer configured are refused from the next client on;
    clients already connected stay. A table that cannot be read keeps the running one.
    """
    running = pm.get_plugin(f"{NAME}:{JWTAuth.__name__}")
    if isinstance(running, JWTAuth):
        fresh = from_settings(Settings.of(config, NAME))
        for name in ("key", "algorithms", "audience", "issuer", "leeway", "require",
                     "client_id_claim", "principal_claim", "source"):
            setattr(running, name, getattr(fresh, name))


__all__ = ["InvalidToken", "JWTAuth", "check_algorithms", "from_settings"]
