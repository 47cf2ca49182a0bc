"""Backend discovery: backend entries that name a service, re-resolved on the core's clock.

A backend entry ``dns+ws://NAME:PORT/path`` (or ``dns+wss://``) is resolved for its
addresses (A and AAAA); ``srv+ws://NAME/path`` for SRV records, which give the
ports too. Each address becomes a pool member ``ws://ADDRESS:PORT/path``; an
address that is no longer in an answer is drained with migrate (its pipes move to
the other members, nothing is lost), a new one is added. A Kubernetes headless
Service name is exactly such an entry: one member per ready pod.

The core decides when to resolve and what an answer means; the driver resolves.
Every ``discovery_interval`` seconds each entry is due: the core emits
:class:`~wspipe_core.actions.ResolveBackends` and learns the answer from
:class:`~wspipe_core.events.BackendsResolved`. An entry with a query in flight is
not asked again. A failed or empty answer changes nothing (a DNS blip must not
drain a pool whose backends are healthy; the pool's own health handles dead
members); only a successful, non-empty answer is authoritative.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .actions import Action, ResolveBackends
from .errors import InvalidBackendURL
from .events import BackendsResolved, QueryId
from .pool import parse_backend_url

log = logging.getLogger("wspipe.discovery")

#: Prefixes of discovered entries: A/AAAA records, or SRV records.
ADDRESS_PREFIX, SRV_PREFIX = "dns+", "srv+"


def is_discovered(entry: str) -> bool:
    """Whether a backend entry names a service to resolve (``dns+``/``srv+``)."""
    return entry.startswith((ADDRESS_PREFIX, SRV_PREFIX))


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed discovered entry: what to resolve and how to make member URLs."""

    #: The entry as configured (``dns+ws://backend.ns.svc:8000/ws``).
    entry: str
    #: ``a`` (A/AAAA records, the port from the entry) or ``srv`` (SRV records).
    kind: str
    #: ``ws`` or ``wss``.
    scheme: str
    #: The name to resolve.
    name: str
    #: The port of every member (``a``); ``None`` for ``srv`` (each record has one).
    port: int | None
    #: Path and query of every member URL.
    target: str

    def member_url(self, host: str, port: int) -> str:
        """The pool member for one resolved address."""
        shown = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{shown}:{port}{self.target}"


def parse_target(entry: str) -> Target:
    """Parse ``dns+ws://NAME[:PORT]/path`` or ``srv+ws://NAME/path``.

    :raises InvalidBackendURL: Not of that shape (saying why).
    """
    kind = "a" if entry.startswith(ADDRESS_PREFIX) else "srv"
    rest = entry.split("+", 1)[1]
    try:
        # The same rules as a static backend URL (scheme, host, no credentials or
        # fragment, percent-encoding): one parser for both.
        address = parse_backend_url(rest)
    except InvalidBackendURL as exc:
        raise InvalidBackendURL(f"invalid backend entry {entry!r}: {exc}") from None
    explicit = urlsplit(rest).port  # valid: parse_backend_url read it
    if kind == "srv" and explicit is not None:
        raise InvalidBackendURL(
            f"invalid backend entry {entry!r}: SRV records give the port; leave it out")
    port = None if kind == "srv" else address.port
    scheme = "wss" if address.tls else "ws"
    return Target(entry, kind, scheme, address.host, port, address.target)


@dataclass(slots=True, eq=False)
class _Entry:
    target: Target
    next_at: float
    #: Member URLs this entry put in the pool.
    members: set[str] = field(default_factory=set)
    #: The query in flight, if any.
    query: QueryId | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """What an answer means for the pool: members to add and members to drain."""

    entry: str
    #: The entry's name: what its members are known by (TLS server name, ``Host``).
    name: str
    add: tuple[str, ...] = ()
    drain: tuple[str, ...] = ()
    #: The resolution failed (or found nothing): the members stay as they were.
    failed: bool = False


@dataclass(eq=False)
class Discovery:
    """The discovered entries, their members and resolution schedule; one timer entry."""

    interval: float
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _queries: dict[QueryId, _Entry] = field(default_factory=dict)
    _next_query: int = 1
    _stopped: bool = False

    def __contains__(self, entry: str) -> bool:
        return entry in self._entries

    def entries(self) -> list[str]:
        """The discovered entries, in the order they were added."""
        return list(self._entries)

    def members(self, entry: str) -> set[str]:
        """The pool members ``entry`` has now."""
        return set(self._entries[entry].members)

    def add(self, target: Target, now: float) -> None:
        """Start discovering ``target``: its first resolution is due at ``now``."""
        if target.entry not in self._entries:
            self._entries[target.entry] = _Entry(target, now)

    def remove(self, entry: str) -> list[str]:
        """Stop discovering ``entry``; its members, which the caller drains."""
        state = self._entries.pop(entry, None)
        if state is None:
            return []
        if state.query is not None:
            self._queries.pop(state.query, None)
        return sorted(state.members)

    def joined(self, entry: str, url: str) -> None:
        """``url``, an answer's member to add, is in the pool now."""
        if (state := self._entries.get(entry)) is not None:
            state.members.add(url)

    def shutdown(self) -> None:
        """Resolve nothing any more."""
        self._stopped = True

    def next_deadline(self) -> float | None:
        """When the next entry is due to be resolved (``None``: none)."""
        if self._stopped:
            return None
        return min((e.next_at for e in self._entries.values() if e.query is None),
                   default=None)

    def fire(self, now: float) -> list[Action]:
        """A query for every entry that is due and has none in flight."""
        out: list[Action] = []
        for state in self._entries.values():
            if state.query is None and state.next_at <= now and not self._stopped:
                state.query = query = self._next_query
                self._next_query += 1
                self._queries[query] = state
                target = state.target
                out.append(ResolveBackends(query, target.kind, target.name, target.port))
        return out

    def resolved(self, event: BackendsResolved, now: float) -> Answer | None:
        """What an answer changes: members new to it (to add) and gone from it (to
        drain). ``None`` for an answer to a query that no longer matters."""
        state = self._queries.pop(event.query, None)
        if state is None or self._stopped:
            return None  # forgotten, or the proxy is shutting down: change nothing
        state.query = None
        state.next_at = now + self.interval
        target = state.target
        if event.error is not None or not event.addresses:
            why = event.error or "no addresses"
            log.warning("discovery: resolving %s failed (%s); keeping its %d member(s)",
                        target.name, why, len(state.members))
            return Answer(target.entry, target.name, failed=True)
        wanted = {target.member_url(host, port) for host, port in event.addresses}
        gone = sorted(state.members - wanted)
        state.members -= set(gone)
        new = sorted(wanted - state.members)
        if new or gone:
            log.info("discovery: %s now has %d address(es): %d new, %d gone",
                     target.name, len(wanted), len(new), len(gone))
        return Answer(target.entry, target.name, tuple(new), tuple(gone))
