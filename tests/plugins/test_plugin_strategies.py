"""Strategy plugins through wspipe_select_backend, with the Harness (no sockets)."""

from __future__ import annotations

import collections
import uuid

import pytest
from wspipe_plugins.strategy.consistent_hash import ConsistentHash
from wspipe_plugins.strategy.least_connections import LeastConnections
from wspipe_plugins.strategy.round_robin import RoundRobin
from wspipe_plugins.strategy.weighted import Weighted

from wspipe_core import ConfigError, ProxyConfig
from wspipe_core.hooks import describe_plugins
from wspipe_core.testing import Harness


def link_counts(h, backends):
    return [len(b.live) for b in backends]


def test_least_connections_fills_the_emptiest_backend():
    h = Harness(plugins=["least_connections"])
    b1, b2, b3 = (h.backend(f"ws://b{i}:80/") for i in (1, 2, 3))
    clients = [h.client() for _ in range(6)]
    assert link_counts(h, (b1, b2, b3)) == [2, 2, 2]
    for c in clients[:2]:  # both on b1 (the first two went b1, b2, b3, b1, ...)
        c.close_ws()
    h.client()
    assert sum(link_counts(h, (b1, b2, b3))) == 5
    assert min(link_counts(h, (b1, b2, b3))) >= 1


def test_round_robin_takes_backends_in_turn_and_skips_a_dead_one():
    h = Harness(plugins=["round_robin"])
    b1, b2, b3 = (h.backend(f"ws://b{i}:80/") for i in (1, 2, 3))
    for _ in range(6):
        h.client()
    assert link_counts(h, (b1, b2, b3)) == [2, 2, 2]
    b2.kill()  # its 2 pipes fail over; b2 gets ejected only after eject_after failures
    h.advance(1.0)
    for _ in range(4):
        h.client()
    h.advance(0.5)  # a pipe that tried b2 before its ejection retries elsewhere
    assert len(b2.live) == 0
    assert sum(link_counts(h, (b1, b3))) == 10


def test_round_robin_object_is_per_proxy():
    a, b = RoundRobin(), RoundRobin()
    ha, hb = Harness(plugins=[a]), Harness(plugins=[b])
    a1, a2 = ha.backend("ws://a1:80/"), ha.backend("ws://a2:80/")
    b1, _ = hb.backend("ws://b1:80/"), hb.backend("ws://b2:80/")
    ha.client()
    hb.client()
    ha.client()
    assert (len(a1.links), len(a2.links), len(b1.links)) == (1, 1, 1)


def test_consistent_hash_is_sticky_by_client_id_even_across_proxies():
    h = Harness(plugins=["consistent_hash"])
    backends = [h.backend(f"ws://b{i}:80/") for i in range(4)]
    ids = [str(uuid.UUID(int=i)) for i in range(1, 41)]
    first = {}
    for client_id in ids:
        h.client(f"/{client_id}")
    for b in backends:
        for link in b.links:
            first[link.header("x-wspipe-client-id")] = b.url
    assert len(first) == 40 and len({*first.values()}) == 4
    # The choice depends only on client id and URLs: another proxy (a restart, or a
    # second replica) sends every client id to the same backend.
    h2 = Harness(plugins=["consistent_hash"])
    again = [h2.backend(b.url) for b in backends]
    for client_id in ids:
        h2.client(f"/{client_id}")
    for b in again:
        for link in b.links:
            assert first[link.header("x-wspipe-client-id")] == b.url


def test_consistent_hash_fails_over_only_the_lost_backends_clients():
    h = Harness(plugins=["consistent_hash"])
    backends = [h.backend(f"ws://b{i}:80/") for i in range(3)]
    for i in range(30):
        h.client(f"/{uuid.UUID(int=i + 1)}")
    before = {link.header("x-wspipe-client-id"): b.url for b in backends for link in b.live}
    backends[0].kill()
    h.advance(0.5)
    after = {link.header("x-wspipe-client-id"): b.url for b in backends for link in b.live}
    assert len(after) == 30
    for client_id, url in before.items():
        if url != backends[0].url:
            assert after[client_id] == url


def test_consistent_hash_moves_few_clients_when_a_backend_is_added():
    plugin = ConsistentHash()
    from wspipe_plugins.strategy.consistent_hash import score

    def owner(client_id, urls):
        return max(urls, key=lambda u: score(client_id, info(u)))

    urls = [f"ws://b{i}:80/" for i in range(5)]
    ids = [str(uuid.UUID(int=i)) for i in range(2000)]
    before = {c: owner(c, urls) for c in ids}
    after = {c: owner(c, [*urls, "ws://b5:80/"]) for c in ids}
    moved = [c for c in ids if before[c] != after[c]]
    assert all(after[c] == "ws://b5:80/" for c in moved)  # only to the new backend
    assert 0.10 < len(moved) / len(ids) < 0.24  # ~1/6
    assert plugin  # the class is the hook's home; score() is its rule


def info(url, weight=1.0, pipes=0):
    from wspipe_core import BackendInfo, BackendState

    return BackendInfo(id=url, url=url, state=BackendState.UP, pipes=pipes, errors=0,
                       consecutive_failures=0, weight=weight)


def test_consistent_hash_respects_weights():
    urls = {"ws://heavy:80/": 3.0, "ws://light:80/": 1.0}
    from wspipe_plugins.strategy.consistent_hash import score

    owners = collections.Counter(
        max(urls, key=lambda u, c=client_id: score(c, info(u, urls[u])))
        for client_id in (str(uuid.UUID(int=i)) for i in range(4000)))
    assert 0.70 < owners["ws://heavy:80/"] / 4000 < 0.80


def test_exclusive_gives_each_backend_one_client_and_makes_the_next_wait():
    config = ProxyConfig(max_interruption=5.0)
    h = Harness(config, plugins=["exclusive"])
    b1, b2 = h.backend("ws://b1:80/"), h.backend("ws://b2:80/")
    c1, c2, c3 = h.client(), h.client(), h.client()
    assert link_counts(h, (b1, b2)) == [1, 1]
    assert c3.accepted  # accepted before any backend is reached, then waits
    c3.send("queued")
    c1.close_ws()
    h.advance(2.0)  # c3's retry after backoff finds b1 free
    assert b1.messages() == ["queued"]
    assert link_counts(h, (b1, b2)) == [1, 1]
    assert c2.close is None


def test_exclusive_closes_a_waiting_client_after_max_interruption():
    h = Harness(ProxyConfig(max_interruption=5.0), plugins=["exclusive"])
    h.backend("ws://b1:80/")
    h.client()
    waiting = h.client()
    h.advance(6.0)
    assert waiting.close is not None and waiting.close.code == 1013


def test_exclusive_blocks_the_builtin_strategy():
    h = Harness(plugins=["exclusive"])
    names = [name for name, plugin in h.proxy.pm.list_name_plugin() if plugin is not None]
    assert "wspipe.strategy" not in names
    assert "exclusive:Exclusive" in names


def test_other_strategy_plugins_keep_the_builtin_behind_them():
    h = Harness(plugins=["weighted"])
    order = [name for name, _ in describe_plugins(h.proxy.pm)]
    assert order.index("weighted:Weighted") < order.index("wspipe.strategy")


def test_a_later_strategy_plugin_replaces_an_earlier_one():
    h = Harness(plugins=["weighted", "round_robin"])
    names = [name for name, plugin in h.proxy.pm.list_name_plugin() if plugin is not None]
    assert "round_robin:RoundRobin" in names and "weighted:Weighted" not in names


def test_weighted_is_also_a_builtin_strategy():
    config = ProxyConfig(strategy="weighted",
                         plugin_settings={"weighted": {"weights": {"ws://b1:80/": 4}}})
    h = Harness(config)
    b1, b2 = h.backend("ws://b1:80/"), h.backend("ws://b2:80/")
    for _ in range(50):
        h.client()
    assert (len(b1.live), len(b2.live)) == (40, 10)
    assert type(h.proxy.pm.get_plugin("wspipe.strategy")) is Weighted


@pytest.mark.parametrize("weights", [(1, 1), (1, 3), (1, 2, 5), (0.5, 4.5)])
def test_weighted_shares_pipes_by_registration_weight(weights):
    h = Harness(plugins=["weighted"])
    backends = [h.backend(f"ws://b{i}:80/", weight=w) for i, w in enumerate(weights)]
    n = 40 * len(weights)
    for _ in range(n):
        h.client()
    total = sum(weights)
    for b, w in zip(backends, weights, strict=True):
        assert abs(len(b.live) - n * w / total) <= 1


def test_weighted_keeps_proportions_as_pipes_come_and_go():
    h = Harness(plugins=[Weighted()])
    heavy = h.backend("ws://heavy:80/", weight=3)
    light = h.backend("ws://light:80/", weight=1)
    clients = [h.client() for _ in range(40)]
    for c in clients[::2]:
        c.close_ws()
    for _ in range(20):
        h.client()
    assert (len(heavy.live), len(light.live)) == (30, 10)


def test_weighted_takes_weights_by_url_from_its_settings():
    config = ProxyConfig(plugin_settings={"weighted": {"weights": {"ws://b1:80/": 4}}})
    h = Harness(config, plugins=["weighted"])
    b1, b2 = h.backend("ws://b1:80/"), h.backend("ws://b2:80/")
    for _ in range(50):
        h.client()
    assert (len(b1.live), len(b2.live)) == (40, 10)


@pytest.mark.parametrize("table", [{"weights": {"ws://b1:80/": 0}}, {"weights": 3},
                                   {"wieghts": {}}])
def test_weighted_refuses_bad_settings(table):
    with pytest.raises(ConfigError, match=r"\[plugins.weighted\]"):
        Harness(ProxyConfig(plugin_settings={"weighted": table}), plugins=["weighted"])


def test_strategies_without_settings_refuse_a_table():
    with pytest.raises(ConfigError, match=r"\[plugins.round_robin\] unknown key\(s\): x"):
        Harness(ProxyConfig(plugin_settings={"round_robin": {"x": 1}}), plugins=["round_robin"])


def test_least_connections_object_ties_go_to_the_first_registered():
    chosen = LeastConnections().wspipe_select_backend([info("ws://a/"), info("ws://b/")])
    assert chosen.url == "ws://a/"
