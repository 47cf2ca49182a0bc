"""Backend discovery on the core's clock: dns+/srv+ entries resolved every
discovery_interval, each address a pool member, vanished ones drained with migrate."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


ADDRESSES = [f"10.0.0.{i}" for i in range(1, 5)]
#: One step of a random run: an answer (a set of addresses), or a failed lookup (None).
answers = st.lists(st.one_of(st.none(), st.sets(st.sampled_from(ADDRESSES))),
                   min_size=1, max_size=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=answers)
def test_members_follow_any_sequence_of_answers_and_no_message_is_lost(steps):
    """Whatever DNS answers, in any order (addresses coming, going, coming back, lookups
    failing or finding nothing): once an answer has held for two intervals the pool is
    exactly its addresses (a failed or empty one changes nothing), no client is closed,
    and every message reaches exactly one backend, across every migration."""
    h = discovering(migrate_rate=1000)
    fakes = {a: h.backend(f"ws://{a}:8000/ws", register=False) for a in ADDRESSES}
    h.dns["svc.local"] = [(ADDRESSES[0], 8000)]
    h.advance(0)
    clients = [h.client() for _ in range(3)]
    expected = {ADDRESSES[0]}
    sent: list[str] = []
    for number, answer in enumerate(steps):
        if answer is None:
            h.dns["svc.local"] = "temporary failure"
        else:
            h.dns["svc.local"] = [(a, 8000) for a in sorted(answer)]
            if answer:
                expected = set(answer)
        for client in clients:
            message = f"{number}:{client.conn}"
            client.send(message)
            sent.append(message)
        h.advance(2 * 5.0 + 1)  # two resolutions, then the drains finish
        assert set(urls(h)) == {f"ws://{a}:8000/ws" for a in expected}
        assert all(c.close is None for c in clients)
    received = [m for fake in fakes.values() for m in fake.messages()]
    assert sorted(received) == sorted(sent)


def test_an_address_back_while_its_old_member_drains_is_added_once_that_one_has_left():
    h = discovering(discovery_interval=4.0, migrate_rate=0.1)  # one pipe moves per 10 s
    h.backend(M1, register=False)
    h.backend(M2, register=False)
    h.dns["svc.local"] = [("10.0.0.1", 8000)]
    h.advance(0)
    clients = [h.client() for _ in range(2)]  # both on M1
    h.dns["svc.local"] = [("10.0.0.2", 8000)]
    h.advance(4)  # t=4: M2 added, M1 drained: one pipe moves now, the other at t=14
    assert [(b.url, b.state.value) for b in h.proxy.backends()] == [
        (M1, "draining"), (M2, "up")]
    h.dns["svc.local"] = [("10.0.0.1", 8000), ("10.0.0.2", 8000)]
    h.advance(8)  # t=8 and t=12: M1 is in the answers but still draining: not added
    assert [(b.url, b.state.value) for b in h.proxy.backends()] == [
        (M1, "draining"), (M2, "up")]
    h.advance(2)  # t=14: its last pipe moves, it leaves the pool
    assert urls(h) == [M2]
    h.advance(2)  # t=16: the next answer adds it again, as a new member
    assert [(b.url, b.state.value) for b in h.proxy.backends()] == [(M2, "up"), (M1, "up")]
    assert all(c.close is None for c in clients)


def test_members_are_dialed_by_address_and_known_by_the_entry_name():
    """TLS server name and Host are the entry's name (a certificate names the service,
    virtual hosts route by it); the address is only where to connect."""
    h = discovering(backends=("dns+wss://svc.local:8443/ws",))
    member = "wss://10.0.0.1:8443/ws"
    b1 = h.backend(member, register=False)
    h.dns["svc.local"] = [("10.0.0.1", 8443)]
    h.advance(0)
    h.client()
    (dial,) = [a for a in h.actions if isinstance(a, act.OpenLink)]
    assert (dial.host, dial.port, dial.tls, dial.server_name) == ("10.0.0.1", 8443, True,
                                                                  "svc.local")
    assert b1.links[0].request.host == "svc.local:8443"
    static = Harness(config(backends=("wss://10.0.0.2:8443/",)))
    assert static.proxy.backends()[0].url == "wss://10.0.0.2:8443/"
