"""Counters the core keeps for metrics; plain integers, read by the driver."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    """Process-wide counters since start. All monotonic except where noted."""

    #: Client -> backend messages and payload bytes relayed (including replayed ones).
    messages_in: int = 0
    bytes_in: int = 0
    #: Backend -> client messages and payload bytes relayed.
    messages_out: int = 0
    bytes_out: int = 0
    #: Client messages that waited in a buffer and were replayed to a new link.
    messages_replayed: int = 0
    #: Pipes closed because they held the most when the memory budget was short.
    budget_evictions: int = 0
    #: Client messages dropped by the ``drop_oldest`` buffer policy.
    messages_dropped: int = 0
    #: Interruptions by cause (``eof``, ``close_code``, ``ping_timeout``, ``protocol``,
    #: ``message_too_big``, ``migrate``).
    interruptions: Counter[str] = field(default_factory=Counter)
    #: Client messages written to a link that was lost before it confirmed them, by
    #: cause (at-least-once and acked: each is replayed, so it may arrive twice).
    unconfirmed_at_interruption: Counter[str] = field(default_factory=Counter)
    #: At-most-once: client messages written to a link lost since its last pong (an
    #: upper bound of what the backend never read), by cause.
    possibly_lost: Counter[str] = field(default_factory=Counter)
    #: Sessions parked because their client vanished, taken over by a new connection,
    #: and ended because nobody came back within ``resume_window``.
    parked: int = 0
    client_resumes: int = 0
    resume_expired: int = 0
    #: Backend messages written to a client connection that vanished since its last pong
    #: (they may never have reached the client; nothing can confirm them).
    possibly_lost_to_client: int = 0
    #: Confirmations of written messages: pongs (at-least-once) and acks (acked).
    confirmations: int = 0
    #: Interruptions that ended with a new link.
    failovers: int = 0
    #: Pipes moved off draining backends by a drain with migrate.
    pipes_migrated: int = 0
    #: Second links dialed because a pipe's link was slow to open (``race_after``),
    #: and how many of them opened first.
    races: int = 0
    races_won: int = 0
    #: Failed link attempts by cause (``connect``, ``handshake``, ``timeout``).
    link_failures: Counter[str] = field(default_factory=Counter)
    #: Clients refused before the upgrade, by HTTP status.
    clients_rejected: Counter[int] = field(default_factory=Counter)
    #: Answers to backend discovery queries, by result (``ok``; ``failed``: an error,
    #: a timeout or no address, which leave the members as they were).
    resolutions: Counter[str] = field(default_factory=Counter)
    #: Clients accepted.
    clients_accepted: int = 0
    #: With a store: client ids refused because another instance holds their lease, new
    #: sessions opened without a lease because the store did not answer (fail open),
    #: times the store became unreachable, and registry entries that could not apply.
    fleet_claims_taken: int = 0
    fleet_claims_failed_open: int = 0
    fleet_store_outages: int = 0
    fleet_registry_rejected: int = 0
    #: Parked sessions handed over to another instance, taken over from one, and
    #: handovers that did not come in time or came as garbage (a new session instead).
    fleet_handovers_out: int = 0
    fleet_handovers_in: int = 0
    fleet_handovers_failed: int = 0
    #: Pipes ended, by the close code the client got (1006 when it just went away).
    clients_closed: Counter[int] = field(default_factory=Counter)
