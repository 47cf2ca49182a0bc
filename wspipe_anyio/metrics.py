"""Prometheus metrics of a proxy, read from the core at scrape time.

:class:`ProxyCollector` turns the core's counters (:class:`wspipe_core.stats.Stats`),
its memory budget and snapshots of the pool and the pipes into metric families
each time ``/metrics`` is scraped: nothing is copied on the hot path.
:class:`FailoverObserver` is a ``wspipe_pipe_event`` plugin that feeds what the
counters cannot say: failovers by reason and how long each took (a histogram).
:class:`Metrics` bundles both in a registry of its own (so that several proxies
in one process do not collide). Every name is prefixed ``wspipe_``; see
docs/operations.md for the list and the alerts to set on them.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from wspipe_core import BackendState, PipeEvent, PipeEventKind, PipeState, hookimpl

if TYPE_CHECKING:
    from .admin import AdminTarget

log = logging.getLogger("wspipe.metrics")

#: Interruption causes the core reports (``Stats.interruptions`` keys); series start at 0.
INTERRUPTION_REASONS = ("eof", "close_code", "ping_timeout", "protocol", "message_too_big",
                        "migrate")
#: Failed link attempt causes (``Stats.link_failures`` keys).
LINK_FAILURE_REASONS = ("connect", "handshake", "timeout")
#: Buckets of ``wspipe_failover_duration_seconds``: a migration takes milliseconds,
#: a backend outage up to ``max_interruption`` (30 s by default).
FAILOVER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_DIRECTIONS = (("client_to_backend", "messages_in", "bytes_in"),
               ("backend_to_client", "messages_out", "bytes_out"))
_ids = itertools.count(1)


class ProxyCollector(Collector):
    """A custom collector reading the core's counters and snapshots at scrape time."""

    def __init__(self, target: AdminTarget) -> None:
        self._target = target

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: the families depend on what the pool holds at scrape time."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        """The metric families, from the core as of now."""
        proxy = self._target.proxy
        stats = proxy.stats

        yield GaugeMetricFamily("wspipe_connections",
                                "Client connections, handshaking or open.",
                                value=proxy.connections)
        yield GaugeMetricFamily("wspipe_max_connections",
                                "Client connections beyond which new ones get HTTP 503.",
                                value=proxy.config.max_connections)
        yield CounterMetricFamily("wspipe_clients_accepted",
                                  "Clients whose upgrade was accepted.",
                                  value=stats.clients_accepted)
        rejected = CounterMetricFamily("wspipe_clients_rejected",
                                       "Clients refused before the upgrade, by HTTP status.",
                                       labels=["status"])
        for status, count in sorted(stats.clients_rejected.items()):
            rejected.add_metric([str(status)], count)
        yield rejected
        closed = CounterMetricFamily("wspipe_clients_closed",
                                     "Pipes ended, by the close code the client got "
                                     "(1006: the client went away).", labels=["code"])
        for code, count in sorted(stats.clients_closed.items()):
            closed.add_metric([str(code)], count)
        yield closed

        by_state = Counter(p.state for p in self._target.pipes())
        pipes = GaugeMetricFamily("wspipe_pipes", "Live pipes by state.", labels=["state"])
        for pipe_state in PipeState:
            if pipe_state is not PipeState.CLOSED:
                pipes.add_metric([pipe_state.value], by_state[pipe_state])
        yield pipes

        messages = CounterMetricFamily("wspipe_messages",
                                       "Messages relayed, by direction (client messages "
                                       "count once, when they leave the client).",
                                       labels=["direction"])
        payload = CounterMetricFamily("wspipe_bytes", "Message payload bytes relayed, by "
                                      "direction.", labels=["direction"])
        for direction, messages_attr, bytes_attr in _DIRECTIONS:
            messages.add_metric([direction], getattr(stats, messages_attr))
            payload.add_metric([direction], getattr(stats, bytes_attr))
        yield messages
        yield payload
        yield CounterMetricFamily("wspipe_messages_replayed",
                                  "Client messages held in a buffer and replayed to a new link.",
                                  value=stats.messages_replayed)
        yield CounterMetricFamily("wspipe_messages_dropped",
                                  "Client messages dropped by the drop_oldest buffer policy.",
                                  value=stats.messages_dropped)

        interruptions = CounterMetricFamily("wspipe_interruptions",
                                            "Links lost under a pipe, by reason.",
                                            labels=["reason"])
        for reason in sorted({*INTERRUPTION_REASONS, *stats.interruptions}):
            interruptions.add_metric([reason], stats.interruptions[reason])
        yield interruptions
        link_failures = CounterMetricFamily("wspipe_link_failures",
                                            "Link attempts that failed before opening, by "
                                            "reason.", labels=["reason"])
        for reason in sorted({*LINK_FAILURE_REASONS, *stats.link_failures}):
            link_failures.add_metric([reason], stats.link_failures[reason])
        yield link_failures

        budget = proxy.budget
        yield GaugeMetricFamily("wspipe_buffered_bytes",
                                "Client message bytes held (buffered and in progress) now, "
                                "as the limits count them: payload plus "
                                "buffer_message_overhead per buffered message.",
                                value=budget.used)
        yield GaugeMetricFamily("wspipe_buffered_bytes_high_water",
                                "Most client message bytes ever held at once "
                                "(counted as wspipe_buffered_bytes).",
                                value=budget.high_water)
        yield GaugeMetricFamily("wspipe_memory_budget_bytes",
                                "The limit on buffered bytes over all pipes.",
                                value=budget.limit)

        backends = self._target.backends()
        counts = Counter(b.state for b in backends)
        per_state = GaugeMetricFamily("wspipe_backends", "Backends in the pool, by state.",
                                      labels=["state"])
        for backend_state in BackendState:
            per_state.add_metric([backend_state.value], counts[backend_state])
        yield per_state
        state = GaugeMetricFamily("wspipe_backend_state",
                                  "1 for the state each backend is in, 0 for the others.",
                                  labels=["backend", "url", "state"])
        assigned = GaugeMetricFamily("wspipe_backend_pipes",
                                     "Pipes assigned to each backend (linked or dialing).",
                                     labels=["backend", "url"])
        errors = CounterMetricFamily("wspipe_backend_errors",
                                     "Errors recorded against each backend (failed or lost "
                                     "links).", labels=["backend", "url"])
        for backend in backends:
            for backend_state in BackendState:
                state.add_metric([backend.id, backend.url, backend_state.value],
                                 1 if backend.state is backend_state else 0)
            assigned.add_metric([backend.id, backend.url], backend.pipes)
            errors.add_metric([backend.id, backend.url], backend.errors)
        yield state
        yield assigned
        yield errors


class FailoverObserver:
    """A ``wspipe_pipe_event`` plugin counting failovers by reason and timing them.

    The reason of an interruption is the ``Stats.interruptions`` key the core
    incremented just before the ``interrupted`` event; a failover is the
    ``resumed`` event that ends it, timed by the event's ``duration``. A pipe closed
    while interrupted counts as a failed failover.
    """

    def __init__(self, metrics: Metrics, stats: Counter[str]) -> None:
        self._metrics = metrics
        self._interruptions = stats
        self._seen: Counter[str] = Counter(stats)
        #: Pipe id -> reason of the interruption it is recovering from.
        self._pending: dict[str, str] = {}

    def _reason(self) -> str:
        now = self._interruptions
        grown = [key for key in now if now[key] > self._seen[key]]
        self._seen = Counter(now)
        return grown[0] if len(grown) == 1 else "unknown"

    @hookimpl
    def wspipe_pipe_event(self, event: PipeEvent) -> None:
        """Count and time failovers."""
        pipe_id = event.pipe.id
        if event.kind is PipeEventKind.INTERRUPTED:
            self._pending[pipe_id] = self._reason()
        elif event.kind is PipeEventKind.RESUMED:
            reason = self._pending.pop(pipe_id, "unknown")
            self._metrics.failovers.labels(reason).inc()
            if event.duration is not None:
                self._metrics.failover_duration.labels(reason).observe(event.duration)
        elif event.kind is PipeEventKind.CLOSED:
            lost = self._pending.pop(pipe_id, None)
            if lost is not None:
                self._metrics.failovers_failed.labels(lost).inc()


class Metrics:
    """The metrics of one proxy: a registry with the collector and the failover plugin.

    The plugin is registered on the proxy's plugin manager now and unregistered by
    :meth:`close`.
    """

    def __init__(self, target: AdminTarget) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ProxyCollector(target))
        self.failovers = PromCounter(
            "wspipe_failovers", "Interruptions that ended with a new link, by reason.",
            ["reason"], registry=self.registry)
        self.failovers_failed = PromCounter(
            "wspipe_failovers_failed", "Interrupted pipes that ended before a new link "
            "(closed with 1013 after max_interruption, or by the client), by reason.",
            ["reason"], registry=self.registry)
        self.failover_duration = Histogram(
            "wspipe_failover_duration_seconds", "Time from an interruption to the new link, "
            "by reason.", ["reason"], buckets=FAILOVER_BUCKETS, registry=self.registry)
        for reason in INTERRUPTION_REASONS:
            self.failovers.labels(reason)
            self.failovers_failed.labels(reason)
            self.failover_duration.labels(reason)
        self._pm = target.proxy.pm
        self._plugin_name = f"wspipe.metrics.{next(_ids)}"
        self._pm.register(FailoverObserver(self, target.proxy.stats.interruptions),
                          name=self._plugin_name)

    def exposition(self, accept: bytes | None = None) -> tuple[bytes, str]:
        """The registry in the format the ``Accept`` header asks for: (body, content type)."""
        encoder, content_type = choose_encoder((accept or b"").decode("latin-1"))
        return encoder(self.registry), content_type

    def close(self) -> None:
        """Unregister the failover plugin."""
        if self._pm.has_plugin(self._plugin_name):
            self._pm.unregister(name=self._plugin_name)
