"""What a chaos run counted, per fault kind, and whether the delivery mode kept its promise.

Pure functions over what the run collected: the messages each client sent, every
record of a message processed by a backend application (in the order the
proxy delivered them: by link number, then by position on that link), the faults
and the client disconnects.

* **lost**: sent, never processed by any backend;
* **duplicated**: processed more than once (each extra time counts);
* **reordered**: processed for the first time after a later message of the same
  client was (in delivery order);
* **gap**: for each client on the faulted backend, the time between the last message
  its application processed before the fault and the first one after it.

Each loss, duplicate, reorder and disconnect is attributed to the fault on the
backend that carried the client at that moment, nearest in time (``none`` if no
fault is within :data:`ATTRIBUTION_WINDOW`).
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: The kinds of fault, in table order.
FAULT_KINDS = ("kill", "restart", "blackhole", "drain", "add")
#: Seconds around a fault within which what happened to its clients is its doing.
ATTRIBUTION_WINDOW = 10.0
NONE = "none"


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault: its kind, the backend, when it began and ended."""

    kind: str
    backend: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Record:
    """A backend application processed message ``n`` of ``client`` at ``time``."""

    client: int
    n: int
    backend: str
    link: int
    position: int
    time: float


@dataclass(slots=True)
class Row:
    """One line of the table."""

    kind: str
    faults: int = 0
    sent: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    disconnects: int = 0
    gaps: list[float] = field(default_factory=list)

    def gap(self, q: float) -> float | None:
        """The ``q`` quantile of the gaps (nearest rank), seconds."""
        if not self.gaps:
            return None
        ordered = sorted(self.gaps)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(slots=True)
class Counts:
    """The table: a row per fault kind, ``none``, and the total."""

    rows: dict[str, Row]
    total: Row

    def as_text(self) -> str:
        """The table as aligned text."""
        head = ("fault", "faults", "sent", "lost", "duplicated", "reordered", "disconnects",
                "gap p50", "gap p99")
        lines = [head]
        for row in [*self.rows.values(), self.total]:
            lines.append((row.kind, str(row.faults), str(row.sent), str(row.lost),
                          str(row.duplicated), str(row.reordered), str(row.disconnects),
                          _ms(row.gap(0.5)), _ms(row.gap(0.99))))
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w)
                                   for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
                         for line in lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}ms"


def count(sent: dict[int, Sequence[tuple[int, float]]], records: Iterable[Record],
          faults: Sequence[Fault], disconnects: dict[int, float], *,
          by_link: bool = True) -> Counts:
    """Count what became of every message.

    ``by_link``: records come from independent processes, ordered by link then
    position on it (record files); otherwise ``position`` alone is the application's
    order (the acked ledger serialises every commit).

    :param sent: Per client, ``(n, time)`` of each message it sent, in order.
    :param records: Every processing of a message by a backend application.
    :param faults: The faults injected.
    :param disconnects: Per client that lost its connection, when.
    """
    rows = {kind: Row(kind) for kind in FAULT_KINDS}
    rows[NONE] = Row(NONE)
    total = Row("total", faults=len(faults))
    for fault in faults:
        rows[fault.kind].faults += 1
    by_backend: dict[str, list[Fault]] = defaultdict(list)
    for fault in sorted(faults, key=lambda f: f.start):
        by_backend[fault.backend].append(fault)
    per_client: dict[int, list[Record]] = defaultdict(list)
    for record in records:
        per_client[record.client].append(record)
    first: dict[int, list[Record]] = {}  # first processing of each message, by time

    def blame(backend: str, when: float) -> Row:
        candidates = by_backend.get(backend, [])
        best: Fault | None = None
        best_distance = math.inf
        for fault in candidates:
            if fault.start - ATTRIBUTION_WINDOW <= when <= fault.end + ATTRIBUTION_WINDOW:
                distance = 0.0 if fault.start <= when <= fault.end else min(
                    abs(when - fault.start), abs(when - fault.end))
                if distance < best_distance:
                    best, best_distance = fault, distance
        return rows[best.kind] if best is not None else rows[NONE]

    for client, recs in per_client.items():
        delivered = sorted(recs, key=(lambda r: (r.link, r.position)) if by_link
                           else (lambda r: (0, r.position)))
        seen: dict[int, Record] = {}
        highest = 0
        link, before, current = 0, "", ""  # the backends of the previous and this link
        for record in delivered:
            if record.link != link:
                link, before, current = record.link, current or record.backend, record.backend
            if record.n in seen:
                total.duplicated += 1
                blame(seen[record.n].backend, record.time).duplicated += 1
                continue
            seen[record.n] = record
            if record.n < highest:
                total.reordered += 1
                blame(before, record.time).reordered += 1  # the link it came after
            highest = max(highest, record.n)
        first[client] = sorted(seen.values(), key=lambda r: r.time)
    for client, messages in sent.items():
        total.sent += len(messages)
        arrivals = first.get(client, [])
        times = [r.time for r in arrivals]
        got = {r.n for r in arrivals}
        for n, when in messages:
            if n not in got:
                total.lost += 1
                blame(_backend_at(arrivals, times, when), when).lost += 1
    for client, when in disconnects.items():
        total.disconnects += 1
        arrivals = first.get(client, [])
        blame(_backend_at(arrivals, [r.time for r in arrivals], when), when).disconnects += 1
    timelines = {client: sorted(recs, key=lambda r: r.time) for client, recs in per_client.items()}
    for fault in faults:
        row = rows[fault.kind]
        for client, arrivals in timelines.items():
            times = [r.time for r in arrivals]
            i = bisect.bisect_right(times, fault.start)
            if i == 0 or i == len(times) or arrivals[i - 1].backend != fault.backend:
                continue
            gap = times[i] - times[i - 1]
            row.gaps.append(gap)
            total.gaps.append(gap)
            row.sent += sum(1 for n, when in sent.get(client, ())
                            if fault.start <= when <= fault.start + gap)
    if not any((rows[NONE].lost, rows[NONE].duplicated, rows[NONE].reordered,
                rows[NONE].disconnects)):
        del rows[NONE]
    return Counts(rows, total)


def _backend_at(arrivals: Sequence[Record], times: Sequence[float], when: float) -> str:
    """The backend that processed the client's last message before ``when``."""
    i = bisect.bisect_right(times, when)
    if i:
        return arrivals[i - 1].backend
    return arrivals[0].backend if arrivals else ""


def broken_promises(delivery: str, total: Row, possibly_lost: float | None) -> list[str]:
    """What the delivery mode promised and the run did not see kept; empty if all held.

    :param delivery: The proxy's mode (``at-most-once``, ``at-least-once``, ``acked``).
    :param total: The total row of :func:`count`.
    :param possibly_lost: ``wspipe_messages_possibly_lost_total`` summed over causes.
    """
    broken = []
    if delivery == "at-most-once":
        if total.duplicated:
            broken.append(f"at-most-once: {total.duplicated} messages duplicated")
        if total.reordered:
            broken.append(f"at-most-once: {total.reordered} messages reordered")
        if possibly_lost is None:
            broken.append("at-most-once: the possibly-lost metric could not be read")
        elif possibly_lost < total.lost:
            broken.append(f"at-most-once: {total.lost} messages lost but the proxy counted "
                          f"only {possibly_lost:.0f} as possibly lost")
    elif delivery == "at-least-once":
        for name, value in (("lost", total.lost), ("reordered", total.reordered),
                            ("client disconnects", total.disconnects)):
            if value:
                broken.append(f"at-least-once: {value} {name}")
    elif delivery == "acked":
        for name, value in (("lost", total.lost),
                            ("duplicated at the application", total.duplicated)):
            if value:
                broken.append(f"acked: {value} {name}")
    return broken
