"""The pool: registration, ejection and cool-down, max_errors, draining (design note 7)."""

from __future__ import annotations

import itertools
from contextlib import ExitStack

import pytest
from wsproto.events import TextMessage

from wspipe_core import (
    BackendAlreadyRegistered,
    BackendState,
    InterruptionCause,
    InvalidBackendURL,
    PipeEventKind,
    PipeState,
    ProxyConfig,
    UnknownBackend,
    hookimpl,
)
from wspipe_core.pool import Pool, parse_backend_url
from wspipe_core.testing import leftovers

from .helpers import apply, harness


def _state(h, url):
    return next(b for b in h.proxy.backends() if b.url == url)


def _failing_clients(h, n):
    """Connect ``n`` clients, one at a time, each failing once on the first backend."""
    for _ in range(n):
        h.client()
        h.advance(1)


def test_registering_a_url_twice_raises():
    h = harness()
    h.backend("ws://b1/")
    with pytest.raises(BackendAlreadyRegistered, match="already registered"):
        h.proxy.add_backend("ws://b1/", now=0)
    assert len(h.proxy.backends()) == 1


def test_config_backends_registered_twice_raise():
    from wspipe_core import Proxy

    with pytest.raises(BackendAlreadyRegistered):
        Proxy(ProxyConfig(backends=("ws://a/", "ws://a/")))


@pytest.mark.parametrize("url", [
    "http://b1/", "b1:80", "ws://", "ws:///path", "ws://user:pw@b1/", "ws://b1/#frag",
    " ws://b1/", "ws://b1:99999/", "ws://b1:port/", "", "wss//b1",
    "ws://b1/a b", "ws://b1/é", "ws://b1/\x00", "ws://b1/?q=\t",
])
def test_invalid_backend_urls_raise(url):
    h = harness()
    with pytest.raises(InvalidBackendURL):
        h.proxy.add_backend(url, now=0)
    assert h.proxy.backends() == []


@pytest.mark.parametrize("weight", [0, -1, True, "2"])
def test_invalid_backend_weight_raises(weight):
    with pytest.raises(InvalidBackendURL, match="weight"):
        Pool(ProxyConfig()).add("ws://b1/", weight)


@pytest.mark.parametrize("url,host,port,tls,target,host_header", [
    ("ws://b1/", "b1", 80, False, "/", "b1"),
    ("wss://b1", "b1", 443, True, "/", "b1"),
    ("ws://b1:8080/x?y=1", "b1", 8080, False, "/x?y=1", "b1:8080"),
    ("wss://[::1]:8443/", "::1", 8443, True, "/", "[::1]:8443"),
])
def test_backend_url_is_parsed(url, host, port, tls, target, host_header):
    address = parse_backend_url(url)
    assert (address.host, address.port, address.tls, address.target) == (host, port, tls, target)
    assert address.host_header == host_header


def test_open_link_action_carries_the_address():
    from wspipe_core import actions as act

    h = harness()
    h.backend("wss://b1:8443/x")
    h.client()
    opened = [a for a in h.actions if isinstance(a, act.OpenLink)]
    assert [(a.host, a.port, a.tls, a.url) for a in opened] == [
        ("b1", 8443, True, "wss://b1:8443/x")]


def test_consecutive_failures_eject_a_backend_until_cool_down_then_it_is_probed():
    h = harness(eject_after=2, eject_base=10, backoff="fixed", backoff_base=1)
    bad = h.backend("ws://bad/", mode="refuse")
    good = h.backend("ws://good/")
    _failing_clients(h, 2)
    assert _state(h, "ws://bad/").state is BackendState.EJECTED
    assert len(bad.links) == 0 and len(good.links) == 2
    h.client()  # least connections would pick bad (0 pipes) but it is ejected
    assert len(good.links) == 3
    h.advance(10)  # cool-down over
    bad.mode = "accept"
    h.client()  # probes bad, which now accepts the upgrade
    assert len(bad.links) == 1
    assert _state(h, "ws://bad/").consecutive_failures == 2  # not proven yet
    bad.links[0].send("hello")  # it answers: the probe succeeded
    info = _state(h, "ws://bad/")
    assert info.state is BackendState.UP and info.consecutive_failures == 0


def test_backend_that_accepts_the_upgrade_then_fails_at_once_is_ejected():
    # An accepted handshake alone is no success: a backend that crashes on every new
    # session (close 1011 right after the 101) must not attract every client.
    h = harness(eject_after=3, eject_base=10, backoff="fixed", backoff_base=1)
    crashing = h.backend("ws://crashing/")
    good = h.backend("ws://good/")
    for _ in range(3):
        c = h.client()
        crashing.live[-1].close_ws(1011, "boom")  # fails over to good at once
        c.send("m")
    assert _state(h, "ws://crashing/").state is BackendState.EJECTED
    before = len(crashing.links)
    h.client()
    assert len(crashing.links) == before  # new clients go to good only
    assert len(good.messages()) == 3


def test_ejection_cool_down_grows_exponentially_while_probes_fail():
    h = harness(eject_after=2, eject_base=10, eject_max=100, backoff="fixed", backoff_base=1)
    h.backend("ws://bad/", mode="refuse")
    h.backend("ws://good/")
    _failing_clients(h, 2)  # ejected at t=1 for 10 s
    until = [h.proxy.pool.get("ws://bad/").ejected_until]
    for _ in range(3):
        h.advance(until[-1] - h.now)
        h.client()  # the probe fails: ejected again, twice as long
        until.append(h.proxy.pool.get("ws://bad/").ejected_until)
    cool_downs = [b - a for a, b in itertools.pairwise(until)]
    assert cool_downs == [20, 40, 80]
    h.advance(until[-1] - h.now)
    h.client()
    assert h.proxy.pool.get("ws://bad/").ejected_until - h.now == 100  # capped at eject_max


def test_when_every_backend_is_ejected_they_are_still_tried():
    h = harness(eject_after=1, eject_base=60, backoff="fixed", backoff_base=1)
    only = h.backend("ws://only/", mode="refuse")
    c = h.client()
    assert _state(h, "ws://only/").state is BackendState.EJECTED
    only.mode = "accept"
    h.advance(2)  # retry (after the excluded attempt) finds only ejected backends: tries one
    assert h.proxy.pipes()[0].state is PipeState.LINKED and c.close is None


def test_max_errors_removes_a_backend_for_good():
    h = harness(max_errors=3, eject_after=100, backoff="fixed", backoff_base=1)
    h.backend("ws://bad/", mode="refuse")
    h.backend("ws://good/")
    _failing_clients(h, 3)
    assert [b.url for b in h.proxy.backends()] == ["ws://good/"]
    with pytest.raises(UnknownBackend):
        h.proxy.remove_backend("ws://bad/", migrate=False, now=h.now)
    # the URL may be registered again afterwards
    h.backend("ws://bad/")


def test_remove_unknown_backend_raises():
    h = harness()
    with pytest.raises(UnknownBackend):
        h.proxy.remove_backend("ws://nope/", migrate=False, now=0)


def test_drain_takes_no_new_pipes_and_removes_backend_once_empty():
    h = harness()
    b1 = h.backend("ws://b1/")
    b2 = h.backend("ws://b2/")
    c1 = h.client()
    assert len(b1.links) == 1
    apply(h, h.proxy.remove_backend("ws://b1/", migrate=False, now=h.now))
    assert _state(h, "ws://b1/").state is BackendState.DRAINING
    h.client()
    h.client()
    assert len(b1.links) == 1 and len(b2.links) == 2
    c1.send("still served")
    assert b1.messages() == ["still served"]
    c1.close_ws()
    assert [b.url for b in h.proxy.backends()] == ["ws://b2/"]


def test_drain_of_an_empty_backend_removes_it_at_once():
    h = harness()
    h.backend("ws://b1/")
    assert h.proxy.remove_backend("ws://b1/", migrate=False, now=0) == []
    assert h.proxy.backends() == []


def test_drain_with_migrate_moves_every_pipe_off_the_backend_losing_nothing():
    h = harness(backoff="fixed", backoff_base=0.1)
    b1 = h.backend("ws://b1/")
    clients = [h.client() for _ in range(4)]
    b2 = h.backend("ws://b2/")
    for i, c in enumerate(clients):
        c.send(f"before-{i}")
    links = list(b1.links)
    # What b1 wrote before it saw our Close is still on the wire.
    late = [link.ws.send(TextMessage(data=f"late-{i}")) for i, link in enumerate(links)]
    with ExitStack() as stack:
        held = [stack.enter_context(link.holding()) for link in links]
        apply(h, h.proxy.remove_backend("ws://b1/", migrate=True, now=h.now))
        h.advance(3 / h.proxy.config.migrate_rate)  # paced: the 4th moves 3 intervals later
        for i, c in enumerate(clients):
            c.send(f"after-{i}")
        assert all(link.close is not None and link.close.code == 1001 for link in links)
    # b1's answers arrive: first its late messages, then its Close reply.
    for link, data, replies in zip(links, late, held, strict=True):
        link.send_raw(data)
        assert len(replies) == 1
        link.send_raw(replies[0])
    h.advance(1)
    for i, c in enumerate(clients):
        assert c.received == [f"late-{i}"]
        assert c.close is None
    assert sorted(b1.messages()) == sorted(f"before-{i}" for i in range(4))
    assert sorted(b2.messages()) == sorted(f"after-{i}" for i in range(4))
    assert [b.url for b in h.proxy.backends()] == ["ws://b2/"]
    assert all(p.backend_id == _state(h, "ws://b2/").id for p in h.proxy.pipes())
    assert leftovers(h.proxy)["links"] == 4  # only the new links remain


def test_migrate_with_no_other_backend_waits_on_the_draining_one_until_another_is_up():
    """A pipe never moves to nowhere: it would only buffer, then get 1013."""
    h = harness(backoff="fixed", backoff_base=0.5, migrate_rate=10)
    b1 = h.backend("ws://b1/")
    c = h.client()
    apply(h, h.proxy.remove_backend("ws://b1/", migrate=True, now=h.now))
    h.advance(5)
    c.send("kept")
    assert h.proxy.pipes()[0].state is PipeState.LINKED and b1.messages() == ["kept"]
    assert h.proxy.migrations_under_way()[0].waiting
    b2 = h.backend("ws://b2/")
    h.advance(0.1)  # the next turn, one interval later
    c.send("moved")
    assert b2.messages() == ["moved"] and b1.links[0].close is not None
    assert h.proxy.migrations_under_way() == []
    assert [b.url for b in h.proxy.backends()] == ["ws://b2/"]


def test_drain_with_migrate_moves_a_pipe_whose_link_is_still_handshaking():
    """Else the link may open later on the draining backend and stay there for good."""
    h = harness(handshake_timeout=10)
    b1 = h.backend("ws://b1/", mode="blackhole")  # slow: answers only when told
    c = h.client()
    c.send("early")
    b2 = h.backend("ws://b2/")
    apply(h, h.proxy.remove_backend("ws://b1/", migrate=True, now=h.now))
    assert b1.links[0].tcp_closed
    assert [b.url for b in h.proxy.backends()] == ["ws://b2/"]
    assert b2.messages() == ["early"]
    assert h.proxy.pipes()[0].state is PipeState.LINKED
    assert h.proxy.backends()[0].errors == 0 and h.proxy.stats.link_failures.total() == 0


@pytest.mark.parametrize("url,target", [
    ("ws://b1/a%20b", "/a%20b"), ("ws://b1/%C3%A9?x=%20", "/%C3%A9?x=%20"),
])
def test_percent_encoded_backend_urls_are_dialed(url, target):
    h = harness(forward_target=False)
    b1 = h.backend(url)
    h.client()
    assert b1.links[0].request is not None and b1.links[0].request.target == target


def test_same_backend_spelled_differently_is_a_duplicate():
    from wspipe_core import BackendAlreadyRegistered, ProxyConfig
    from wspipe_core.pool import Pool

    pool = Pool(ProxyConfig())
    pool.add("ws://b1")
    with pytest.raises(BackendAlreadyRegistered, match="already registered"):
        pool.add("ws://b1:80/")


def test_cool_down_ends_on_time_with_no_traffic_so_readiness_recovers():
    """The pool's own deadline returns an ejected backend to ``up``: no pipe needs to ask."""
    h = harness(eject_after=1, eject_base=5, max_interruption=1, backoff="fixed",
                backoff_base=0.2)
    b1 = h.backend("ws://b1/", mode="refuse")
    c = h.client()
    assert _state(h, "ws://b1/").state is BackendState.EJECTED
    h.advance(1.5)  # the client gives up (1013): nothing dials any more
    assert c.close is not None and c.close.code == 1013
    assert h.proxy.pipes() == []
    b1.mode = "accept"  # the backend is back; no traffic at all
    assert h.proxy.next_deadline() == pytest.approx(5.0)
    h.advance(3.4)
    assert _state(h, "ws://b1/").state is BackendState.EJECTED
    h.advance(0.2)
    assert _state(h, "ws://b1/").state is BackendState.UP
    assert h.proxy.next_deadline() is None


def test_drain_with_migrate_is_paced_at_migrate_rate_on_the_core_clock():
    moved_at: list[float] = []

    class Recorder:
        @hookimpl
        def wspipe_pipe_event(self, event):
            if event.cause is InterruptionCause.MIGRATE and event.kind is PipeEventKind.INTERRUPTED:
                moved_at.append(event.now)

    h = harness(migrate_rate=4, plugins=[Recorder()])  # one pipe every 0.25 s
    h.backend("ws://b1/")
    clients = [h.client() for _ in range(5)]
    b2 = h.backend("ws://b2/")
    h.advance(1)
    apply(h, h.proxy.remove_backend("b1", migrate=True, now=h.now))
    info = h.proxy.migrations_under_way()[0]
    assert (info.backend_id, info.total, info.moved, info.remaining) == ("b1", 5, 1, 4)
    h.advance(0.7)
    assert moved_at == pytest.approx([1.0, 1.25, 1.5])
    h.advance(10)
    assert moved_at == pytest.approx([1.0, 1.25, 1.5, 1.75, 2.0])  # never two at once
    assert len(b2.links) == 5 and h.proxy.stats.pipes_migrated == 5
    assert h.proxy.migrations_under_way() == []
    assert [b.url for b in h.proxy.backends()] == ["ws://b2/"]
    assert all(c.close is None for c in clients)


def test_pipes_that_ended_before_their_turn_take_no_slot():
    h = harness(migrate_rate=1)
    h.backend("ws://b1/")
    clients = [h.client() for _ in range(3)]
    h.backend("ws://b2/")
    apply(h, h.proxy.remove_backend("b1", migrate=True, now=h.now))  # first moves now
    clients[1].close_ws(1000)  # ends before its turn
    h.advance(1.0)  # one interval: the third moves, not a wasted turn on the second
    assert sorted(p.backend_id for p in h.proxy.pipes()) == ["b2", "b2"]
    assert h.proxy.migrations_under_way() == []
