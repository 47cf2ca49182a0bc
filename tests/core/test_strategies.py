"""The built-in backend-selection strategies, through the proxy (design note 7)."""

from __future__ import annotations

import uuid

import pytest

from wspipe_core import BackendInfo, BackendState, ConfigError, PipeState
from wspipe_core.builtin.strategies import ConsistentHash

from .helpers import harness


def _backend_of(h, client):
    """The backend id of the current link of ``client``'s pipe."""
    pipe = h.pipe(client)
    assert pipe is not None and pipe.state is PipeState.LINKED
    return pipe.backend_id


def _ids(n, seed=0):
    return [str(uuid.UUID(int=(seed << 64) + i + 1, version=4)) for i in range(n)]


def test_unknown_strategy_is_a_config_error():
    with pytest.raises(ConfigError, match="strategy"):
        harness(strategy="random")


def test_least_connections_balances_pipes():
    h = harness()
    for i in range(3):
        h.backend(f"ws://b{i}/")
    clients = [h.client() for _ in range(9)]
    assert [b.pipes for b in h.proxy.backends()] == [3, 3, 3]
    for c in clients[0::3]:  # the three pipes of the first backend end
        c.close_ws()
    assert [b.pipes for b in h.proxy.backends()] == [0, 3, 3]
    for _ in range(3):
        h.client()
    assert [b.pipes for b in h.proxy.backends()] == [3, 3, 3]


def test_least_connections_ties_go_to_the_earliest_registered():
    h = harness()
    h.backend("ws://b1/")
    c1, _ = h.client(), h.client()
    h.backend("ws://b2/")
    h.client()
    assert [b.pipes for b in h.proxy.backends()] == [2, 1]
    c1.close_ws()
    h.client()
    assert [b.pipes for b in h.proxy.backends()] == [2, 1]


def test_round_robin_cycles_in_registration_order():
    h = harness(strategy="round_robin")
    for i in range(3):
        h.backend(f"ws://b{i}/")
    for _ in range(7):
        h.client()
    order = [p.backend_id for p in h.proxy.pipes()]
    assert order == ["b1", "b2", "b3", "b1", "b2", "b3", "b1"]


def test_round_robin_skips_backends_that_are_not_candidates():
    h = harness(strategy="round_robin", eject_after=1, eject_base=100, backoff="fixed",
                backoff_base=0.1)
    h.backend("ws://b1/")
    h.backend("ws://b2/", mode="refuse")
    h.backend("ws://b3/")
    h.client()  # b1
    h.client()  # b2: refused, ejected; the retry goes on to b3
    h.advance(0.1)
    for _ in range(4):
        h.client()
    assert [p.backend_id for p in h.proxy.pipes()] == ["b1", "b3", "b1", "b3", "b1", "b3"]


def test_consistent_hash_is_sticky_per_client_id():
    h = harness(strategy="consistent_hash")
    for i in range(4):
        h.backend(f"ws://b{i}/")
    first = {}
    for client_id in _ids(40):
        c = h.client(f"/{client_id}")
        first[client_id] = _backend_of(h, c)
        c.close_ws()
    assert len(set(first.values())) == 4  # spread over every backend
    for client_id in _ids(40):
        c = h.client(f"/{client_id}")
        assert _backend_of(h, c) == first[client_id]
        c.close_ws()


def test_consistent_hash_adding_a_backend_moves_about_one_client_in_n():
    ids = _ids(1000)

    def assignment(n):
        h = harness(strategy="consistent_hash")
        for i in range(n):
            h.backend(f"ws://b{i}/")
        out = {}
        for client_id in ids:
            c = h.client(f"/{client_id}")
            out[client_id] = h.proxy.pipes()[-1].backend_id
            c.close_ws()
        return out

    before, after = assignment(4), assignment(5)
    moved = [cid for cid in ids if before[cid] != after[cid]]
    assert all(after[cid] == "b5" for cid in moved)  # only to the new backend
    assert 0.12 < len(moved) / len(ids) < 0.28  # ~1/5


def test_consistent_hash_fails_over_to_the_next_choice_and_comes_back():
    h = harness(strategy="consistent_hash")
    backends = [h.backend(f"ws://b{i}/") for i in range(3)]
    client_id = _ids(1)[0]
    c = h.client(f"/{client_id}")
    home = _backend_of(h, c)
    home_backend = backends[int(home[1:]) - 1]
    home_backend.links[0].eof()
    assert _backend_of(h, c) != home
    c.close_ws()
    c2 = h.client(f"/{client_id}")
    assert _backend_of(h, c2) == home


def test_consistent_hash_scores_do_not_depend_on_candidate_order():
    infos = [BackendInfo(f"b{i}", f"ws://b{i}/", BackendState.UP, 0, 0, 0, 1.0) for i in range(5)]
    from dataclasses import dataclass

    @dataclass
    class P:
        client_id: str

    strategy = ConsistentHash()
    for cid in _ids(20):
        a = strategy.wspipe_select_backend(P(cid), infos)  # type: ignore[arg-type]
        b = strategy.wspipe_select_backend(P(cid), list(reversed(infos)))  # type: ignore[arg-type]
        assert a == b


def test_exclusive_never_shares_a_backend():
    h = harness(strategy="exclusive", max_interruption=5)
    b1, b2 = h.backend("ws://b1/"), h.backend("ws://b2/")
    c1, c2, c3 = h.client(), h.client(), h.client()
    assert len(b1.links) == 1 and len(b2.links) == 1
    assert h.proxy.pipes()[2].state is PipeState.CONNECTING  # waits for a free backend
    assert [b.pipes for b in h.proxy.backends()] == [1, 1]
    h.advance(5)
    assert c3.close is not None and c3.close.code == 1013
    assert c1.close is None and c2.close is None


def test_exclusive_backend_returns_to_pool_when_its_pipe_ends():
    h = harness(strategy="exclusive", backoff="fixed", backoff_base=1)
    b1 = h.backend("ws://b1/")
    c1 = h.client()
    c2 = h.client()
    c2.send("waiting")
    c1.close_ws()
    h.advance(1)
    assert len(b1.links) == 2 and b1.links[1].received == ["waiting"]
    assert h.proxy.backends()[0].pipes == 1


def test_exclusive_backend_returns_to_pool_when_its_pipe_moves():
    h = harness(strategy="exclusive", backoff="fixed", backoff_base=1)
    b1, b2 = h.backend("ws://b1/"), h.backend("ws://b2/")
    c1 = h.client()  # on b1
    b1.links[0].eof()  # c1 moves to b2
    assert len(b2.links) == 1 and [b.pipes for b in h.proxy.backends()] == [0, 1]
    h.client()
    assert len(b1.links) == 2  # b1 is free again
    assert c1.close is None
