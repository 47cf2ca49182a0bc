"""The pool: registration, ejection and cool-down, max_errors, draining (design note 7)."""

from __future__ import annotations

import itertools

import pytest

from wspipe_core import (
    BackendAlreadyRegistered,
    BackendNotAllowed,
    BackendState,
    ConfigError,
    InvalidBackendURL,
    PipeState,
    ProxyConfig,
    UnknownBackend,
)
from wspipe_core.pool import Pool, parse_backend_url

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


@pytest.mark.parametrize("weight", [0, -1, True, "2", float("nan"), float("inf"), -float("inf")])
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




@pytest.mark.parametrize(("allow", "host", "allowed"), [
    ((), "anything.example", True),
    (("10.0.0.0/8",), "10.1.2.3", True),
    (("10.0.0.0/8",), "11.1.2.3", False),
    (("10.0.0.0/8",), "ten.internal", False),  # a network never admits a name
    (("127.0.0.1",), "127.0.0.1", True),
    (("fd00::/8",), "fd12::1", True),
    (("fd00::/8",), "fe80::1", False),
    (("*.internal",), "api.internal", True),
    (("*.internal",), "a.b.internal", True),
    (("*.internal",), "internal", False),
    (("*.internal",), "evilinternal", False),
    (("API.Internal",), "api.internal", True),
    (("api.internal",), "api.internal.evil.example", False),
])
def test_backend_allow_decides_by_the_urls_host(allow, host, allowed):
    h = harness(backend_allow=allow)
    url = f"ws://{'[' + host + ']' if ':' in host else host}:8000/"
    if allowed:
        assert h.proxy.add_backend(url, now=h.now).url == url
    else:
        with pytest.raises(BackendNotAllowed, match="not on backend_allow"):
            h.proxy.add_backend(url, now=h.now)
        assert all(b.url != url for b in h.proxy.backends())


def test_a_config_backend_off_the_allow_list_is_refused_at_start():
    with pytest.raises(BackendNotAllowed, match=r"'evil\.example'"):
        harness(backends=("ws://10.0.0.1/", "ws://evil.example/"), backend_allow=("10.0.0.0/8",))


@pytest.mark.parametrize("entry", ["", "10.0.0.0/33", "10.0.0.1/8/9", "bad host", "*.", "a..b",
                                   "::zz", "-" * 64])
def test_bad_backend_allow_entries_are_config_errors(entry):
    with pytest.raises(ConfigError, match="backend_allow"):
        ProxyConfig(backend_allow=(entry,))
