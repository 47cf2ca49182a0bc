"""Backend discovery on the core's clock: dns+/srv+ entries resolved every
discovery_interval, each address a pool member, vanished ones drained with migrate."""

from __future__ import annotations

import pytest

from wspipe_core import InvalidBackendURL
from wspipe_core import actions as act
from wspipe_core import events as ev
from wspipe_core.discovery import Discovery, parse_target
from wspipe_core.testing import Harness, leftovers

from .helpers import config

ENTRY = "dns+ws://svc.local:8000/ws"
M1, M2, M3 = (f"ws://10.0.0.{i}:8000/ws" for i in (1, 2, 3))


def discovering(**overrides: object) -> Harness:
    overrides.setdefault("backends", (ENTRY,))
    overrides.setdefault("discovery_interval", 5.0)
    return Harness(config(backoff="fixed", backoff_base=0.1, **overrides))  # type: ignore[arg-type]


def urls(h: Harness) -> list[str]:
    return [b.url for b in h.proxy.backends()]


@pytest.mark.parametrize(("entry", "kind", "name", "port", "member"), [
    ("dns+ws://svc.local:8000/ws", "a", "svc.local", 8000, "ws://10.0.0.1:8000/ws"),
    ("dns+wss://svc.local/", "a", "svc.local", 443, "wss://10.0.0.1:443/"),
    ("dns+ws://svc.local", "a", "svc.local", 80, "ws://10.0.0.1:80/"),
    ("srv+ws://_ws._tcp.svc.local/x?y=1", "srv", "_ws._tcp.svc.local", None,
     "ws://10.0.0.1:7000/x?y=1"),
])
def test_entries_parse(entry, kind, name, port, member):
    target = parse_target(entry)
    assert (target.kind, target.name, target.port) == (kind, name, port)
    assert target.member_url("10.0.0.1", port or 7000) == member
    assert target.member_url("fd00::1", 9).startswith(f"{target.scheme}://[fd00::1]:9/")


@pytest.mark.parametrize("entry", ["dns+http://svc/", "srv+ws://svc:80/", "dns+ws://u:p@svc/",
                                   "dns+ws:///path", "dns+ws://svc/a b"])
def test_invalid_entries_are_refused_at_start(entry):
    with pytest.raises(InvalidBackendURL):
        discovering(backends=(entry,))


def test_members_follow_the_answers_and_a_vanished_one_is_drained_with_migrate():
    h = discovering()
    b1 = h.backend(M1, register=False)
    b2 = h.backend(M2, register=False)
    h.dns["svc.local"] = [("10.0.0.1", 8000)]
    h.advance(0)  # the first resolution is due at once
    assert [(q.kind, q.name, q.port) for q in h.resolutions] == [("a", "svc.local", 8000)]
    assert urls(h) == [M1]
    clients = [h.client() for _ in range(3)]
    for i, c in enumerate(clients):
        c.send(f"one-{i}")
    assert sorted(b1.messages()) == [f"one-{i}" for i in range(3)]

    h.dns["svc.local"] = [("10.0.0.1", 8000), ("10.0.0.2", 8000)]
    h.advance(4.9)
    assert len(h.resolutions) == 1 and urls(h) == [M1]   # not before the interval
    h.advance(0.1)
    assert len(h.resolutions) == 2 and urls(h) == [M1, M2]

    h.dns["svc.local"] = [("10.0.0.2", 8000)]
    h.advance(5)
    clients[0].send("two-0")  # the first pipe moves at once; its message is replayed
    h.advance(1)  # migration is paced at migrate_rate; every pipe has moved by now
    for i, c in enumerate(clients[1:], 1):
        c.send(f"two-{i}")
    assert urls(h) == [M2]
    assert sorted(b2.messages()) == [f"two-{i}" for i in range(3)]
    assert all(c.close is None for c in clients)
    assert sorted(b1.messages() + b2.messages()) == sorted(
        [f"one-{i}" for i in range(3)] + [f"two-{i}" for i in range(3)])  # nothing lost
    assert h.proxy.stats.pipes_migrated == 3
    assert leftovers(h.proxy)["links"] == 3


def test_a_failed_or_empty_answer_keeps_the_members():
    h = discovering()
    h.backend(M1, register=False)
    h.dns["svc.local"] = [("10.0.0.1", 8000)]
    h.advance(0)
    h.dns["svc.local"] = "temporary failure in name resolution"
    h.advance(5)
    assert urls(h) == [M1]
    h.dns["svc.local"] = []
    h.advance(5)
    assert urls(h) == [M1]
    assert len(h.resolutions) == 3
    assert h.proxy.stats.resolutions == {"ok": 1, "failed": 2}


def test_one_query_in_flight_per_entry_and_the_interval_counts_from_the_answer():
    h = discovering()
    h.hold_resolutions = True
    h.advance(60)
    assert len(h.resolutions) == 1  # no answer yet: never asked twice
    h.backend(M3, register=False)
    h.dns["svc.local"] = [("10.0.0.3", 8000)]
    h.resolve(h.resolutions[0])
    assert urls(h) == [M3]
    h.advance(4.9)
    assert len(h.resolutions) == 1
    h.advance(0.1)
    assert len(h.resolutions) == 2


def test_srv_answers_give_ports_and_ipv6_members_are_bracketed():
    h = discovering(backends=("srv+ws://_ws._tcp.svc.local/",))
    h.dns["_ws._tcp.svc.local"] = [("10.0.0.1", 7001), ("fd00::2", 7002)]
    h.advance(0)
    assert h.resolutions[0].kind == "srv" and h.resolutions[0].port is None
    assert urls(h) == ["ws://10.0.0.1:7001/", "ws://[fd00::2]:7002/"]


def test_a_static_backend_with_the_same_address_is_not_added_twice():
    h = discovering(backends=(ENTRY, M1))
    h.dns["svc.local"] = [("10.0.0.1", 8000), ("10.0.0.2", 8000)]
    h.advance(0)
    assert urls(h) == [M1, M2]


def test_discovery_stops_at_shutdown():
    h = discovering()
    h.hold_resolutions = True
    h.advance(0)
    h.apply(h.proxy.shutdown(h.now))
    h.backend(M1, register=False)
    h.dns["svc.local"] = [("10.0.0.1", 8000)]
    h.resolve(h.resolutions[0])  # an answer that lands during shutdown adds nothing
    h.advance(60)
    assert len(h.resolutions) == 1
    assert urls(h) == []


def test_an_answer_for_a_forgotten_entry_changes_nothing():
    d = Discovery(interval=5)
    d.add(parse_target(ENTRY), 0.0)
    (query,) = d.fire(0.0)
    assert isinstance(query, act.ResolveBackends)
    assert d.remove(ENTRY) == []
    assert d.resolved(ev.BackendsResolved(query.query, (("10.0.0.1", 8000),)), 1.0) is None
    assert d.next_deadline() is None


def test_backend_allow_bounds_what_discovery_can_add(caplog):
    """Members are addresses, so a network on backend_allow bounds what DNS can add."""
    h = discovering(backend_allow=("10.0.0.0/30",))
    h.dns["svc.local"] = [("10.0.0.1", 8000), ("10.9.9.9", 8000)]
    h.advance(0)
    assert urls(h) == [M1]
    assert "host '10.9.9.9' is not on backend_allow; not added" in caplog.text
