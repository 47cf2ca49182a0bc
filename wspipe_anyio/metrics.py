"""Prometheus metrics of a proxy, read at scrape time from its control interface.

:class:`ProxyCollector` turns the core's counters (:class:`wspipe_core.stats.Stats`),
its memory budget, the driver's outboxes and snapshots of the pool, the pipes and
the migrations into metric families each time the registry is collected: nothing
is copied on the hot path. :class:`FailoverObserver` is a ``wspipe_pipe_event``
plugin that feeds what the counters cannot say: failovers by cause and how long
each took (a histogram). :class:`Metrics` bundles both in a registry of its own
(so that several proxies in one process do not collide); a
:class:`~wspipe_anyio.ProxyServer` creates one as ``server.metrics`` and the admin
API's ``/metrics`` renders it. Every name is prefixed ``wspipe_``; see
docs/operations.md for the list and the alerts to set on them.

A backend's series carry its id (``backend``) and its URL as
:func:`wspipe_anyio.logfmt.url_label` gives it (``url``: scheme, host, port and
path; never credentials or a query, which may hold secrets).

The registry also holds prometheus_client's standard process (``process_*``),
platform (``python_info``) and garbage-collector (``python_gc_*``) collectors, and
``wspipe_build_info``.
"""

from __future__ import annotations

import itertools
import platform
from collections import Counter
from collections.abc import Iterator

import pluggy
from prometheus_client import (
    CollectorRegistry,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from wspipe_core import (
    BackendState,
    Delivery,
    InterruptionCause,
    LinkFailure,
    PipeEvent,
    PipeEventKind,
    PipeState,
    hookimpl,
)
from wspipe_core.stats import Stats

from .admin.console import installed_version
from .control import ProxyControl
from .logfmt import url_label

#: Buckets of ``wspipe_failover_duration_seconds``: a migration takes milliseconds,
#: a backend outage up to ``max_interruption`` (30 s by default).
FAILOVER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_DIRECTIONS = (("client_to_backend", "messages_in", "bytes_in"),
               ("backend_to_client", "messages_out", "bytes_out"))
_ids = itertools.count(1)


class ProxyCollector(Collector):
    """A custom collector reading a proxy's counters and snapshots at scrape time."""

    def __init__(self, source: ProxyControl) -> None:
        self._source = source

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: the families depend on what the pool holds at scrape time."""
        return iter(())

    @staticmethod
    def _fleet(source: ProxyControl, stats: Stats) -> Iterator[Metric]:
        fleet = source.fleet()
        counters = fleet.get("counters", {})
        if fleet.get("store") is not None:
            yield GaugeMetricFamily("wspipe_store_up", "1 while the fleet's store answers, "
                                    "0 while it does not (absent without a store).",
                                    value=1 if fleet["store"] == "up" else 0)
        yield GaugeMetricFamily("wspipe_fleet_members", "Live instances of the fleet "
                                "(1 without a store).", value=fleet.get("members", 1))
        yield GaugeMetricFamily("wspipe_fleet_leases", "Client-id leases this instance "
                                "holds.", value=counters.get("leases", 0))
        for name, value, text in (
                ("claims_taken", stats.fleet_claims_taken,
                 "New clients refused with 409 because another instance holds their id."),
                ("claims_failed_open", stats.fleet_claims_failed_open,
                 "New clients accepted without a lease because the store did not answer."),
                ("store_outages", stats.fleet_store_outages,
                 "Times the store became unreachable."),
                ("handovers_out", stats.fleet_handovers_out,
                 "Parked sessions handed over to another instance."),
                ("handovers_in", stats.fleet_handovers_in,
                 "Sessions taken over from another instance."),
                ("handovers_failed", stats.fleet_handovers_failed,
                 "Handovers that did not come in time or came as garbage (a new session)."),
                ("registry_rejected", stats.fleet_registry_rejected,
                 "Registry entries this instance could not apply (invalid backend URL)."),
                ("store_errors", counters.get("errors", 0),
                 "Store operations that failed or timed out."),
                ("store_dropped", counters.get("dropped", 0),
                 "Store requests dropped because the request queue was full."),
                ("lease_conflicts", counters.get("lease_conflicts", 0),
                 "Leases of this instance found held by another instance on renewal."),
                ("store_garbage", counters.get("garbage", 0),
                 "Values read from the store that failed validation and were ignored.")):
            yield CounterMetricFamily(f"wspipe_fleet_{name}", text, value=value)

    def collect(self) -> Iterator[Metric]:
        """The metric families, as of now."""
        source = self._source
        stats = source.stats

        yield GaugeMetricFamily("wspipe_connections",
                                "Client connections, handshaking or open.",
                                value=source.connections)
        yield GaugeMetricFamily("wspipe_max_connections",
                                "Client connections beyond which new ones get HTTP 503.",
                                value=source.config.max_connections)
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
            closed.add_metric([str(int(code))], count)
        yield closed
        yield from self._fleet(source, stats)

        resolutions = CounterMetricFamily(
            "wspipe_discovery_resolutions", "Answers to backend discovery queries, by "
            "result (failed: error, timeout or no address; the members stay).",
            labels=["result"])
        for result in ("ok", "failed"):
            resolutions.add_metric([result], stats.resolutions[result])
        yield resolutions

        live = source.pipes()
        by_state = Counter(p.state for p in live)
        pipes = GaugeMetricFamily("wspipe_pipes", "Live pipes by state.", labels=["state"])
        for pipe_state in PipeState:
            if pipe_state is not PipeState.CLOSED:
                pipes.add_metric([pipe_state.value], by_state[pipe_state])
        yield pipes
        by_mode = Counter(p.delivery for p in live)
        modes = GaugeMetricFamily("wspipe_pipes_delivery", "Live pipes by delivery mode.",
                                  labels=["mode"])
        for mode in Delivery:
            modes.add_metric([mode.value], by_mode[mode.value])
        yield modes
        yield GaugeMetricFamily("wspipe_pipes_parked",
                                "Sessions whose client vanished and that wait for it now "
                                "(resume_window).",
                                value=sum(1 for p in live if p.parked_until is not None))
        yield GaugeMetricFamily("wspipe_held_for_client_messages",
                                "Backend messages held now for clients that are away.",
                                value=sum(p.held_for_client for p in live))
        yield CounterMetricFamily("wspipe_clients_parked",
                                  "Sessions parked because their client vanished without "
                                  "a Close.", value=stats.parked)
        yield CounterMetricFamily("wspipe_client_resumes",
                                  "Sessions taken over by a new connection of their client.",
                                  value=stats.client_resumes)
        yield CounterMetricFamily("wspipe_resume_expired",
                                  "Parked sessions ended because nobody came back within "
                                  "resume_window.", value=stats.resume_expired)
        yield CounterMetricFamily("wspipe_messages_possibly_lost_to_client",
                                  "Backend messages written to client connections that then "
                                  "vanished, since their last pong (nothing can confirm "
                                  "them).", value=stats.possibly_lost_to_client)

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

        lost = CounterMetricFamily("wspipe_messages_possibly_lost",
                                   "At most once: client messages written to a link lost "
                                   "since its last pong (an upper bound of what the backend "
                                   "never read), by reason.", labels=["reason"])
        unconfirmed = CounterMetricFamily("wspipe_messages_unconfirmed_at_interruption",
                                          "At least once and acked: client messages written "
                                          "to a lost link before it confirmed them (each is "
                                          "replayed, so it may arrive twice), by reason.",
                                          labels=["reason"])
        for cause in InterruptionCause:
            lost.add_metric([cause.value], stats.possibly_lost[cause])
            unconfirmed.add_metric([cause.value], stats.unconfirmed_at_interruption[cause])
        yield lost
        yield unconfirmed
        yield CounterMetricFamily("wspipe_confirmations",
                                  "Confirmations of written client messages: pongs (at least "
                                  "once) and acks (acked).", value=stats.confirmations)

        interruptions = CounterMetricFamily("wspipe_interruptions",
                                            "Links lost under a pipe, by reason.",
                                            labels=["reason"])
        for cause in InterruptionCause:
            interruptions.add_metric([cause.value], stats.interruptions[cause])
        yield interruptions
        link_failures = CounterMetricFamily("wspipe_link_failures",
                                            "Link attempts that failed before opening, by "
                                            "reason.", labels=["reason"])
        for failure in LinkFailure:
            link_failures.add_metric([failure.value], stats.link_failures[failure])
        yield link_failures
        yield CounterMetricFamily("wspipe_pipes_migrated",
                                  "Pipes moved off draining backends by a drain with migrate.",
                                  value=stats.pipes_migrated)

        budget = source.budget
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
        yield GaugeMetricFamily("wspipe_outbox_bytes",
                                "Bytes waiting to be written to client and backend sockets "
                                "(bounded by write_high_water per socket).",
                                value=source.queued_bytes())

        backends = source.backends()
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
            url = url_label(backend.url)
            for backend_state in BackendState:
                state.add_metric([backend.id, url, backend_state.value],
                                 1 if backend.state is backend_state else 0)
            assigned.add_metric([backend.id, url], backend.pipes)
            errors.add_metric([backend.id, url], backend.errors)
        yield state
        yield assigned
        yield errors
        remaining = GaugeMetricFamily("wspipe_migration_remaining",
                                      "Pipes still queued to move off each backend being "
                                      "drained with migrate.", labels=["backend"])
        for migration in source.migrations():
            remaining.add_metric([migration.backend_id], migration.remaining)
        yield remaining
        checks = CounterMetricFamily("wspipe_health_checks",
                                     "Active health checks of each backend, by result (ok, "
                                     "failed).", labels=["backend", "url", "result"])
        by_id = {b.id: b for b in backends}
        for health in source.backend_health():
            owner = by_id.get(health.backend_id)
            if owner is None:
                continue
            url = url_label(owner.url)
            checks.add_metric([owner.id, url, "ok"], health.checks - health.check_failures)
            checks.add_metric([owner.id, url, "failed"], health.check_failures)
        yield checks


class FailoverObserver:
    """A ``wspipe_pipe_event`` plugin counting failovers by cause and timing them.

    A failover is the ``resumed`` event that ends an interruption, timed by the
    event's ``duration``; a ``closed`` event carrying a cause ended an interrupted
    pipe before a new link: a failed failover. The label is ``event.cause``, an
    :class:`wspipe_core.InterruptionCause`.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    @hookimpl
    def wspipe_pipe_event(self, event: PipeEvent) -> None:
        """Count and time failovers; time client resumes."""
        if event.kind is PipeEventKind.CLIENT_RESUMED and event.duration is not None:
            self._metrics.resume_gap.observe(event.duration)
            return
        if event.cause is None:
            return
        cause = event.cause.value
        if event.kind is PipeEventKind.RESUMED:
            self._metrics.failovers.labels(cause).inc()
            if event.duration is not None:
                self._metrics.failover_duration.labels(cause).observe(event.duration)
        elif event.kind is PipeEventKind.CLOSED:
            self._metrics.failovers_failed.labels(cause).inc()


class Metrics:
    """The metrics of one proxy: a registry with the collector and the failover plugin.

    :param source: What the collector reads at scrape time.
    :param pm: The proxy's plugin manager; the failover plugin is registered on it
        now and unregistered by :meth:`close`.
    :param version: The wspipe version, for ``wspipe_build_info`` (default: the
        installed package's).
    """

    def __init__(self, source: ProxyControl, pm: pluggy.PluginManager, *,
                 version: str | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ProxyCollector(source))
        # The standard collectors, in this registry (the global one holds them too).
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        build = Gauge("wspipe_build_info", "1, labelled with the wspipe and Python versions.",
                      ["version", "python"], registry=self.registry)
        build.labels(version or installed_version(), f"{platform.python_implementation()} "
                              f"{platform.python_version()}").set(1)
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
        self.reloads = PromCounter(
            "wspipe_reloads", "Configuration reloads (SIGHUP, POST /reload), by result "
            "(failed: nothing changed).", ["result"], registry=self.registry)
        for result in ("applied", "failed"):
            self.reloads.labels(result)
        self.resume_gap = Histogram(
            "wspipe_client_resume_gap_seconds", "Time a client was away before it resumed "
            "its session.", buckets=FAILOVER_BUCKETS, registry=self.registry)
        for cause in InterruptionCause:  # every series exists from the start, at 0
            self.failovers.labels(cause.value)
            self.failovers_failed.labels(cause.value)
            self.failover_duration.labels(cause.value)
        self._pm = pm
        self._plugin_name = f"wspipe.metrics.{next(_ids)}"
        pm.register(FailoverObserver(self), name=self._plugin_name)

    def exposition(self, accept: bytes | str | None = None) -> tuple[bytes, str]:
        """The registry in the format an ``Accept`` header asks for: (body, content type)."""
        if isinstance(accept, bytes):
            accept = accept.decode("latin-1")
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def close(self) -> None:
        """Unregister the failover plugin (the counters stop moving)."""
        if self._pm.has_plugin(self._plugin_name):
            self._pm.unregister(name=self._plugin_name)
