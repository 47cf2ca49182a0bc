"""The proxy's configuration: every limit and timeout, validated, with defaults."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .allowlist import BackendAllowList
from .codes import Delivery
from .errors import ConfigError

KiB = 1024
MiB = 1024 * KiB

#: ``max_message_size`` unless ``buffer_limit`` is smaller.
DEFAULT_MAX_MESSAGE_SIZE = 4 * MiB

#: Backend close codes that mean "this link failed, find another" (design note 4).
DEFAULT_INTERRUPTION_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})


@dataclass(frozen=True)
class ProxyConfig:
    """Limits, timeouts and policies of one proxy. All times are in seconds.

    Construction validates every field and raises :class:`ConfigError` naming the
    offending one. ``from_mapping`` builds one from a config-file table.
    """

    #: Backend URLs registered at start-up; ``dns+ws://NAME:PORT/…`` and
    #: ``srv+ws://NAME/…`` (or ``wss``) entries are discovered (see ``discovery.py``).
    backends: tuple[str, ...] = ()
    #: Seconds between two resolutions of each discovered (``dns+``/``srv+``) backend.
    discovery_interval: float = 10.0
    #: Hosts backend URLs may point at: names (``*.internal`` for any name below one),
    #: addresses or CIDR networks (:mod:`wspipe_core.allowlist`); empty allows any.
    backend_allow: tuple[str, ...] = ()
    #: Open pipes beyond which new clients get HTTP 503.
    max_connections: int = 10_000
    #: Per-pipe limit on buffered plus in-progress client message bytes.
    buffer_limit: int = 5 * MiB
    #: Bytes charged per buffered message on top of its payload, so that a flood of
    #: empty messages is bounded too (0 counts payload bytes only).
    buffer_message_overhead: int = 64
    #: Limit on buffered plus in-progress message bytes over all pipes.
    memory_budget: int = 1024 * MiB
    #: Largest message (after assembly of fragments) relayed either way; over it: close 1009.
    #: 0 (the default) means 4 MiB, or ``buffer_limit`` if that is smaller.
    max_message_size: int = 0
    #: Pending handshakes (connections whose upgrade request is not complete) from one
    #: peer address; a new one beyond it closes that peer's oldest with 408.
    max_pending_per_peer: int = 64
    #: Pending handshakes in all; a new one beyond it closes the oldest with 408.
    max_pending_handshakes: int = 1024
    #: Largest request head a client may send before the upgrade; over it: HTTP 431.
    max_header_size: int = 16 * KiB
    #: Time a client has to complete its upgrade request, and a link to connect and
    #: complete its handshake.
    handshake_timeout: float = 10.0
    #: Time a link has to connect to its backend and complete its handshake. Shorter
    #: than ``handshake_timeout`` by default: a backend on the same network answers in
    #: milliseconds, and a pipe must not wait long on one that never answers.
    link_timeout: float = 3.0
    #: A link still not open this long after it was dialed gets a second one, to
    #: another backend, racing it: the first to open carries the pipe. 0 disables.
    race_after: float = 0.5
    #: Interval between keepalive pings on each link and client; 0 disables pings.
    ping_interval: float = 20.0
    #: A link (or client) that does not answer a ping within this time is dead.
    ping_timeout: float = 20.0
    #: Longest time a pipe may stay without a live link before the client gets 1013.
    max_interruption: float = 30.0
    #: Time a peer has to answer our Close frame before its socket is closed.
    close_timeout: float = 5.0
    #: Backend close codes treated as interruptions (fail over); others end the pipe.
    interruption_codes: frozenset[int] = DEFAULT_INTERRUPTION_CODES
    #: Consecutive failures after which a backend is ejected from the pool.
    eject_after: int = 3
    #: First ejection cool-down; doubles on each ejection in a row, up to ``eject_max``.
    eject_base: float = 1.0
    #: Longest ejection cool-down.
    eject_max: float = 60.0
    #: Total errors after which a backend is removed for good; ``None`` never removes.
    max_errors: int | None = None
    #: Name of the built-in backend-selection strategy.
    strategy: str = "least_connections"
    #: Name of the built-in buffer policy: ``close``, ``pause`` or ``drop_oldest``.
    buffer_policy: str = "close"
    #: Name of the built-in backoff: ``exponential`` (full jitter) or ``fixed``.
    backoff: str = "exponential"
    #: Backoff before the second attempt; the exponential backoff doubles it per attempt.
    backoff_base: float = 0.05
    #: Longest backoff between two attempts of one pipe.
    backoff_max: float = 2.0
    #: Subprotocols a client may ask for. ``None`` (the default): whatever the client
    #: offers is offered to the backend and the backend's choice is the answer; a list
    #: keeps only those (``*`` keeps any); an empty list refuses every subprotocol.
    subprotocols: tuple[str, ...] | None = None
    #: Append the client's path and query to the backend URL's path.
    forward_target: bool = True
    #: Client request headers copied to the backend handshake (case-insensitive).
    forward_headers: tuple[str, ...] = ("cookie", "authorization")
    #: Header carrying the client id to the backend.
    client_id_header: str = "x-wspipe-client-id"
    #: Pipes moved per second, over the whole proxy, by a drain with migrate.
    migrate_rate: float = 50.0
    #: A client that vanishes without a Close (EOF, reset, no pong) leaves its session
    #: parked this long: the link stays and what the backend sends is held until a new
    #: connection with the same client id takes it over. 0 ends the session at once.
    resume_window: float = 30.0
    #: With a store (a fleet): how long a client-id lease lives without renewal; leases
    #: are renewed every third of it, so a killed instance's ids are free this long after.
    lease_ttl: float = 10.0
    #: With a store: the longest wait for its answer to a claim (then it fails open).
    store_timeout: float = 1.0
    #: Seconds between two active health checks (a WebSocket handshake) of each
    #: backend; 0 (the default) turns them off: health is then passive only.
    health_check_interval: float = 0.0
    #: Time a health check has to connect and be answered; then it failed.
    health_check_timeout: float = 2.0
    #: Request target of the health checks (``/health?probe=1``); ``None``: the
    #: backend URL's own path and query.
    health_check_path: str | None = None
    #: HTTP status a healthy backend answers with (101: the upgrade is accepted).
    health_check_status: int = 101
    #: What a pipe promises for client messages across an interruption: ``at-most-once``
    #: (the default), ``at-least-once`` or ``acked`` (see docs/behaviour.md, Delivery);
    #: the ``wspipe_delivery`` hook may choose per pipe.
    delivery: str = "at-most-once"
    #: With ``at-least-once`` delivery: the shortest time between two confirmation pings
    #: on a link. Messages written meanwhile wait for the next one (the retained window
    #: grows by about this much traffic; each ping confirms more). 0: a ping per burst.
    confirm_interval: float = 0.05
    #: With ``acked`` delivery: a text message from the backend that starts with this,
    #: followed by a sequence number, acknowledges every client message up to it.
    ack_prefix: str = "\x00wspipe:ack:"
    #: Prefix of the headers that tell a backend which session a link continues
    #: (``session``, ``link``, ``delivery``, ``replayed``, ``seq``).
    session_header_prefix: str = "x-wspipe-"
    #: Unsent bytes towards one peer above which the other side is no longer read.
    write_high_water: int = 256 * KiB
    #: Unsent bytes below which reading resumes.
    write_low_water: int = 64 * KiB
    #: Settings tables of plugins, by plugin name (``[plugins.NAME]`` in the config file).
    plugin_settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        size = self.max_message_size
        if isinstance(size, int) and not isinstance(size, bool) and size == 0:
            buffer_limit = self.buffer_limit
            default = DEFAULT_MAX_MESSAGE_SIZE
            if isinstance(buffer_limit, int) and 0 < buffer_limit < default:
                default = buffer_limit
            object.__setattr__(self, "max_message_size", default)
        positive_ints = ("max_connections", "buffer_limit", "memory_budget",
                         "max_message_size", "max_header_size", "eject_after",
                         "write_high_water", "max_pending_per_peer", "max_pending_handshakes")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        overhead = self.buffer_message_overhead
        if not isinstance(overhead, int) or isinstance(overhead, bool) or overhead < 0:
            raise ConfigError(
                f"buffer_message_overhead must be an integer >= 0, got {overhead!r}")
        positive_times = ("handshake_timeout", "link_timeout", "max_interruption",
                          "close_timeout", "eject_base", "eject_max", "backoff_max",
                          "lease_ttl", "store_timeout", "discovery_interval")
        rate = self.migrate_rate
        if (not isinstance(rate, int | float) or isinstance(rate, bool)
                or not 0 < rate < float("inf")):
            raise ConfigError(f"migrate_rate must be > 0 pipes per second, got {rate!r}")
        for name in positive_times:
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        for name in ("ping_interval", "ping_timeout", "backoff_base", "race_after",
                     "resume_window", "confirm_interval"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a number of seconds >= 0, got {value!r}")
        _check_health(self)
        if self.ping_interval and not self.ping_timeout:
            raise ConfigError("ping_timeout must be > 0 when ping_interval is set")
        if self.max_header_size > 16 * KiB:
            raise ConfigError("max_header_size must be <= 16384 (the request-head limit of h11, "
                              "which wsproto parses with)")
        if not 0 <= self.write_low_water < self.write_high_water:
            raise ConfigError("write_low_water must be >= 0 and below write_high_water")
        if self.max_message_size > self.buffer_limit:
            raise ConfigError(f"max_message_size ({self.max_message_size}) must not exceed "
                              f"buffer_limit ({self.buffer_limit}): a message must fit the buffer")
        if self.buffer_limit > self.memory_budget:
            raise ConfigError("buffer_limit must not exceed memory_budget")
        if self.max_errors is not None and self.max_errors <= 0:
            raise ConfigError(f"max_errors must be a positive integer, got {self.max_errors!r}")
        for name in ("backends", "backend_allow", "subprotocols", "forward_headers"):
            # A bare string would be searched by substring ("chat" allows "ha").
            value = getattr(self, name)
            if value is None and name == "subprotocols":
                continue
            if (not isinstance(value, tuple | list)
                    or not all(isinstance(item, str) for item in value)):
                raise ConfigError(f"{name} must be a list of strings, got {value!r}")
        BackendAllowList.parse(self.backend_allow)
        if not isinstance(self.interruption_codes, frozenset | set):
            raise ConfigError(
                f"interruption_codes must be a set of close codes, got {self.interruption_codes!r}")
        for code in self.interruption_codes:
            if not isinstance(code, int) or isinstance(code, bool) or not (1000 <= code <= 4999):
                raise ConfigError(f"interruption_codes: {code} is not a WebSocket close code")
        if self.buffer_policy not in ("close", "pause", "drop_oldest"):
            raise ConfigError(
                f"buffer_policy must be close, pause or drop_oldest, got {self.buffer_policy!r}")
        if self.backoff not in ("exponential", "fixed"):
            raise ConfigError(f"backoff must be exponential or fixed, got {self.backoff!r}")
        if self.delivery not in {d.value for d in Delivery}:
            raise ConfigError("delivery must be at-most-once, at-least-once or acked, got "
                              f"{self.delivery!r}")
        if not isinstance(self.ack_prefix, str) or not self.ack_prefix:
            raise ConfigError("ack_prefix must be a non-empty string")
        prefix = self.session_header_prefix
        if not isinstance(prefix, str) or not prefix or not all(
                c.isalnum() or c in "-_" for c in prefix) or not prefix.isascii():
            raise ConfigError(
                f"session_header_prefix must be a header-name prefix, got {prefix!r}")
        if not self.client_id_header or not self.client_id_header.isascii():
            raise ConfigError("client_id_header must be a non-empty ASCII header name")

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> ProxyConfig:
        """Build a config from a mapping (e.g. a parsed TOML table); unknown keys are errors.

        Keys may use ``-`` or ``_``; lists become tuples; ``interruption_codes`` a frozenset.
        """
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"unknown configuration key {key!r}")
            if name == "interruption_codes" and isinstance(value, list | tuple | set):
                value = frozenset(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except TypeError as exc:  # pragma: no cover - from_mapping filters names
            raise ConfigError(str(exc)) from None


def _check_health(cfg: ProxyConfig) -> None:
    """Validate the ``health_check_*`` keys."""
    for name in ("health_check_interval", "health_check_timeout"):
        value = getattr(cfg, name)
        if (not isinstance(value, int | float) or isinstance(value, bool)
                or not 0 <= value < float("inf")):
            raise ConfigError(f"{name} must be a number of seconds >= 0, got {value!r}")
    if cfg.health_check_interval and not cfg.health_check_timeout:
        raise ConfigError("health_check_timeout must be > 0 when health_check_interval is set")
    path = cfg.health_check_path
    if path is not None and (not isinstance(path, str) or not path.startswith("/")
                             or not path.isascii() or not path.isprintable() or " " in path):
        raise ConfigError(f"health_check_path must be a percent-encoded path starting with /, "
                          f"got {path!r}")
    status = cfg.health_check_status
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise ConfigError(f"health_check_status must be an HTTP status, got {status!r}")
