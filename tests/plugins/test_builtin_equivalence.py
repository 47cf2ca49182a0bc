"""Every built-in is one implementation: selected by configuration name, by ``--plugin
NAME`` or as an object, the same scenario makes the same choices, delays and outcomes.

Each scenario runs through the Harness with a seeded random source, several backends
of different weights and failures, and returns a trace of everything a user sees. The
plugin runs use a configuration whose own built-in is a *different* one, so the
plugin must be what decides. Each scenario is checked to tell its subjects apart
(different strategies, weights, policies, settings give different traces), so the
comparisons would catch two copies that drift (e.g. one ignoring weights).
"""

from __future__ import annotations

import itertools
import uuid

import pytest

from wspipe_core import PipeEventKind, ProxyConfig, hookimpl
from wspipe_core import actions as act
from wspipe_core.builtin import (
    BUFFER_POLICIES,
    STRATEGIES,
    BufferPolicy,
    CloseOnFull,
    ConsistentHash,
    DropOldest,
    Exclusive,
    LeastConnections,
    PauseOnFull,
    RoundRobin,
    Strategy,
    Weighted,
)
from wspipe_core.testing import Harness

SEED = 7
WEIGHTS = (1.0, 3.0, 0.5, 2.0)
URLS = tuple(f"ws://10.0.0.{i + 1}:9000/" for i in range(len(WEIGHTS)))
#: Settings of the strategies that take some; the same table is given both ways.
STRATEGY_SETTINGS = {"weighted": {"weights": {URLS[2]: 4.0}}}


def client_path(i: int) -> str:
    return f"/{uuid.UUID(int=i + 1, version=4)}"


def link_trace(h: Harness) -> list[tuple[int, str, str | None]]:
    """Every link the proxy opened, in order: (link id, backend URL, client id)."""
    opened = [a for a in h.actions if isinstance(a, act.OpenLink)]
    links = {link.link: link for b in h.backends.values() for link in b.links}
    return [(a.link, a.url, links[a.link].header("x-wspipe-client-id")
             if a.link in links and links[a.link].request is not None else None)
            for a in opened]


# -- strategies


def strategy_scenario(config: ProxyConfig, plugins: list[object],
                      weights: tuple[float, ...] = WEIGHTS) -> dict[str, object]:
    """40 clients over four weighted backends; pipes end; one backend dies and returns."""
    h = Harness(config, plugins=plugins, seed=SEED)
    backends = [h.backend(url, weight=w) for url, w in zip(URLS, weights, strict=True)]
    clients = []
    for i in range(40):
        h.advance(0.01)  # (no two pipes share a deadline, as in stagger())
        clients.append(h.client(client_path(i)))
        if i % 4 == 3:
            clients.pop(0).close_ws()  # pipes end along the way
        if i == 20:
            backends[1].kill()  # its pipes fail over; new ones retry after a backoff
            h.advance(0.5)
        if i == 30:
            backends[1].mode = "accept"
            h.advance(2.0)
    h.advance(5.0)
    return {
        "links": link_trace(h),
        "pipes": [(p.client_id, p.backend_id, p.state.value) for p in h.proxy.pipes()],
        "closes": [c.close.code if c.close else None for c in h.clients.values()],
    }


def strategy_config(strategy: str, **kwargs: object) -> ProxyConfig:
    # Jittered backoff, so pipes that failed together do not retry at the same instant
    # (the order of equal deadlines is not part of what is compared).
    return ProxyConfig(strategy=strategy, ping_interval=0, max_interruption=4.0,
                       backoff_base=0.25, backoff_max=1.0, **kwargs)  # type: ignore[arg-type]


def other_strategy(name: str) -> str:
    """A built-in strategy that is not ``name``, for the configuration of plugin runs."""
    return "round_robin" if name != "round_robin" else "least_connections"


STRATEGY_OBJECTS: dict[str, Strategy] = {
    "least_connections": LeastConnections(), "round_robin": RoundRobin(),
    "consistent_hash": ConsistentHash(), "exclusive": Exclusive(),
    "weighted": Weighted(STRATEGY_SETTINGS["weighted"]["weights"]),
}


def test_every_strategy_is_covered():
    assert set(STRATEGY_OBJECTS) == set(STRATEGIES) == {
        "least_connections", "round_robin", "consistent_hash", "exclusive", "weighted"}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_strategy_chooses_the_same_by_config_name_plugin_name_and_object(name):
    settings = {name: STRATEGY_SETTINGS[name]} if name in STRATEGY_SETTINGS else {}
    by_config = strategy_scenario(strategy_config(name, plugin_settings=settings), [])
    by_plugin = strategy_scenario(
        strategy_config(other_strategy(name), plugin_settings=settings), [name])
    # An object passed in code: its own instance, like a fresh plugin's.
    obj = type(STRATEGY_OBJECTS[name])(*([STRATEGY_SETTINGS[name]["weights"]]
                                        if name in STRATEGY_SETTINGS else []))
    by_object = strategy_scenario(strategy_config(other_strategy(name)), [obj])
    assert by_plugin == by_config
    assert by_object == by_config


def test_the_strategy_scenario_tells_every_strategy_apart():
    traces = {name: strategy_scenario(strategy_config(name), []) for name in STRATEGIES}
    # Replayable: a second run (other objects, other addresses) gives the same trace.
    assert strategy_scenario(strategy_config("exclusive"), []) == traces["exclusive"]
    for a, b in itertools.combinations(sorted(traces), 2):
        assert traces[a] != traces[b], f"{a} and {b} look the same in the scenario"


@pytest.mark.parametrize("name", ["consistent_hash", "weighted"])
@pytest.mark.parametrize("way", ["config", "plugin"])
def test_weighted_strategies_honour_registration_weights_both_ways(name, way):
    def run(weights):
        if way == "config":
            return strategy_scenario(strategy_config(name), [], weights)
        return strategy_scenario(strategy_config(other_strategy(name)), [name], weights)

    assert run(WEIGHTS) != run((1.0,) * len(WEIGHTS))


@pytest.mark.parametrize("way", ["config", "plugin"])
def test_weighted_reads_its_table_both_ways(way):
    def run(table):
        settings = {"weighted": table} if table else {}
        if way == "config":
            return strategy_scenario(strategy_config("weighted", plugin_settings=settings), [])
        return strategy_scenario(
            strategy_config("round_robin", plugin_settings=settings), ["weighted"])

    assert run(STRATEGY_SETTINGS["weighted"]) != run(None)


def test_the_last_named_strategy_plugin_decides():
    expected = strategy_scenario(strategy_config("round_robin"), [])
    assert strategy_scenario(strategy_config("least_connections"),
                             ["weighted", "round_robin"]) == expected
    exclusive = strategy_scenario(strategy_config("exclusive"), [])
    assert strategy_scenario(strategy_config("least_connections"),
                             ["round_robin", "exclusive"]) == exclusive


class PickLast:
    """A user's strategy: the last candidate."""

    @hookimpl
    def wspipe_select_backend(self, candidates):
        return candidates[-1]


@pytest.mark.parametrize("plugins", [
    [PickLast(), "weighted"], ["weighted", PickLast()],
    ["port_affinity", "consistent_hash"], ["consistent_hash", "port_affinity"],
], ids=["user-first", "user-last", "configured-user-first", "configured-user-last"])
def test_a_users_strategy_wins_over_a_first_party_one_given_in_any_order(plugins):
    port = {"port_affinity": {"port": 9002}}
    h = Harness(ProxyConfig(plugin_settings=port), plugins=plugins)
    b1, b2 = h.backend("ws://10.0.0.1:9001/", weight=5), h.backend("ws://10.0.0.2:9002/")
    for i in range(6):
        h.client(client_path(i))
    assert (len(b1.links), len(b2.links)) == (0, 6)


# -- buffer policies


LIMIT = 1000


def message(client: int, i: int) -> str:
    return f"{client}:{i:04d}".ljust(100, ".")


class Closed:
    """Records the ``closed`` pipe events (with what the core counted)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int | None, dict[str, float]]] = []

    @hookimpl
    def wspipe_pipe_event(self, event):
        if event.kind is PipeEventKind.CLOSED:
            self.events.append((event.pipe.client_id, event.code, dict(event.extra)))


def stagger(h: Harness, i: int):
    """Connect client ``i`` a little after the previous one, so their deadlines differ."""
    h.advance(0.01)
    return h.client(client_path(i))


def buffer_scenario(config: ProxyConfig, plugins: list[object]) -> dict[str, object]:
    """Three clients fill their buffers and the memory budget during an outage."""
    closed = Closed()
    h = Harness(config, plugins=[closed, *plugins], seed=SEED)
    backend = h.backend(URLS[0], mode="refuse")
    h.backend(URLS[1], mode="refuse", weight=2)
    a, b, c = (stagger(h, i) for i in range(3))
    sent: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for who, client, count in ((0, a, 14), (1, b, 8), (2, c, 3)):
        for i in range(count):
            if client.paused or client.close is not None:
                break  # a paused client's socket is no longer read: it stops sending
            client.send(message(who, i))
            sent[who].append(message(who, i))
    state = [(cl.close.code if cl.close else None, cl.paused) for cl in (a, b, c)]
    budget = [p.buffered_bytes for p in h.proxy.pipes()]
    for fake in h.backends.values():
        fake.mode = "accept"
    h.advance(3.0)
    for cl in (a, b, c):
        if cl.close is None:
            cl.close_ws()
    return {
        "during": state, "buffered": budget, "sent": sent,
        "delivered": sorted(backend.messages() + h.backends[URLS[1]].messages()),
        "after": [(cl.close.code if cl.close else None, cl.paused) for cl in (a, b, c)],
        "dropped": h.proxy.stats.messages_dropped, "closed": closed.events,
    }


def buffer_config(policy: str) -> ProxyConfig:
    return ProxyConfig(buffer_policy=policy, buffer_limit=LIMIT, memory_budget=1500,
                       max_message_size=100, buffer_message_overhead=0, ping_interval=0,
                       backoff_base=1.0, max_interruption=30.0)


def other_policy(name: str) -> str:
    return "pause" if name != "pause" else "close"


BUFFER_OBJECTS: dict[str, type[BufferPolicy]] = {
    "close": CloseOnFull, "pause": PauseOnFull, "drop_oldest": DropOldest}


@pytest.mark.parametrize("name", sorted(BUFFER_POLICIES))
def test_a_buffer_policy_decides_the_same_by_config_name_plugin_name_and_object(name):
    by_config = buffer_scenario(buffer_config(name), [])
    assert buffer_scenario(buffer_config(other_policy(name)), [name]) == by_config
    assert buffer_scenario(buffer_config(other_policy(name)), [BUFFER_OBJECTS[name]()]) \
        == by_config


def test_the_buffer_scenario_tells_every_policy_apart():
    assert set(BUFFER_OBJECTS) == set(BUFFER_POLICIES)
    traces = {name: buffer_scenario(buffer_config(name), []) for name in BUFFER_POLICIES}
    assert buffer_scenario(buffer_config("pause"), []) == traces["pause"]
    for a, b in itertools.combinations(sorted(traces), 2):
        assert traces[a] != traces[b], f"{a} and {b} look the same in the scenario"
    drop = traces["drop_oldest"]
    # drop_oldest drops from a full buffer; on the memory budget the pipe holding the
    # most drops for the others, so nobody is closed and the first buffer shrinks.
    assert drop["dropped"] and drop["during"] == [(None, False)] * 3
    buffered = drop["buffered"]
    assert isinstance(buffered, list) and buffered[0] < 1000 and buffered[2] == 300


def test_drop_oldest_counts_drops_the_same_both_ways():
    by_name = Harness(buffer_config("close"), plugins=["drop_oldest"])
    by_config = Harness(buffer_config("drop_oldest"))
    for h in (by_name, by_config):
        h.backend(URLS[0], mode="refuse")
        client = h.client(client_path(0))
        for i in range(15):
            client.send(message(0, i))
    counters = []
    for h, name in ((by_name, "drop_oldest:DropOldest"), (by_config, "wspipe.buffer_policy")):
        plugin = h.proxy.pm.get_plugin(name)
        assert type(plugin) is DropOldest
        counters.append((plugin.dropped, sorted(plugin.dropped_by_pipe.values())))
    assert counters == [(5, [5]), (5, [5])]


# -- backoff


def retry_delays(config: ProxyConfig, plugins: list[object], attempts: int = 14) -> list[float]:
    """The delays between the failed attempts of one pipe while every backend refuses."""
    h = Harness(config, plugins=plugins, seed=SEED)
    for url, weight in zip(URLS[:2], WEIGHTS, strict=False):
        h.backend(url, mode="refuse", weight=weight)
    h.client(client_path(0))
    delays = []
    for _ in range(attempts):
        (pipe,) = h.proxy.pipes()
        assert pipe.retry_at is not None
        delays.append(pipe.retry_at - h.now)
        h.advance(pipe.retry_at - h.now)
    return delays


def backoff_config(**kwargs: object) -> ProxyConfig:
    return ProxyConfig(ping_interval=0, max_interruption=1e6, eject_after=10**6,
                       **kwargs)  # type: ignore[arg-type]


#: (by configuration fields, the same settings as a [plugins.backoff] table).
BACKOFFS = {
    "exponential": ({"backoff": "exponential", "backoff_base": 0.1, "backoff_max": 3.0},
                    {"kind": "exponential", "base": 0.1, "max": 3.0}),
    "fixed": ({"backoff": "fixed", "backoff_base": 0.3}, {"kind": "fixed", "delay": 0.3}),
}
#: Configuration fields of the plugin runs: different from the table, so the table decides.
OTHER_FIELDS = {"backoff": "exponential", "backoff_base": 5.0, "backoff_max": 9.0}


@pytest.mark.parametrize("kind", sorted(BACKOFFS))
def test_a_backoff_waits_the_same_by_config_and_by_plugin_with_the_same_settings(kind):
    fields, table = BACKOFFS[kind]
    by_config = retry_delays(backoff_config(**fields), [])
    by_plugin = retry_delays(backoff_config(**OTHER_FIELDS, plugin_settings={"backoff": table}),
                             ["backoff"])
    assert by_plugin == by_config
    assert retry_delays(backoff_config(**fields), ["backoff"]) == by_config


def test_the_backoff_scenario_tells_kinds_and_settings_apart():
    exponential = retry_delays(backoff_config(**BACKOFFS["exponential"][0]), [])
    fixed = retry_delays(backoff_config(**BACKOFFS["fixed"][0]), [])
    other = retry_delays(backoff_config(**OTHER_FIELDS), [])
    assert fixed == pytest.approx([0.3] * len(fixed))
    assert len(set(exponential)) == len(exponential)  # jittered, from the seeded rng
    assert max(exponential) <= 3.0 and max(exponential[6:]) > 1.5  # grew to its cap
    assert other != exponential
