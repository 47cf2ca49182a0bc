"""The deadline heap, and the proxy's timers as seen through next_deadline/handle_timer."""

from __future__ import annotations

from wspipe_core.deadlines import Deadlines
from wspipe_core.testing import leftovers

from .helpers import harness


def test_earliest_deadline_is_next():
    d = Deadlines()
    d.set("a", 5.0)
    d.set("b", 2.0)
    d.set("c", 9.0)
    assert d.next() == 2.0 and len(d) == 3


def test_setting_again_moves_a_deadline_and_none_clears_it():
    d = Deadlines()
    d.set("a", 5.0)
    d.set("a", 1.0)
    assert d.next() == 1.0
    d.set("a", 7.0)
    assert d.next() == 7.0
    d.set("a", None)
    assert d.next() is None and len(d) == 0


def test_pop_due_returns_due_keys_earliest_first_once():
    d = Deadlines()
    for key, when in [("a", 3.0), ("b", 1.0), ("c", 2.0), ("d", 10.0)]:
        d.set(key, when)
    d.set("c", 2.5)
    assert d.pop_due(3.0) == ["b", "c", "a"]
    assert d.pop_due(3.0) == []
    assert d.next() == 10.0


def test_heap_stays_bounded_by_live_keys_under_churn():
    d = Deadlines()
    for i in range(10_000):
        d.set(i % 10, float(i))
    assert len(d) == 10
    assert d.heap_size <= 2 * 10 + 64 + 1


def test_idle_proxy_has_no_deadline():
    h = harness()
    assert h.proxy.next_deadline() is None
    h.backend("ws://b1/")
    assert h.proxy.next_deadline() is None


def test_open_client_with_pings_has_a_deadline_and_none_once_gone():
    h = harness(ping_interval=5, ping_timeout=5)
    h.backend("ws://b1/")
    c = h.client()
    assert h.proxy.next_deadline() == 5
    c.close_ws()
    assert h.proxy.next_deadline() is None


def test_handle_timer_before_a_deadline_does_nothing():
    h = harness(handshake_timeout=10)
    c = h.raw_client(b"GET / HTTP/1.1\r\n")
    assert h.proxy.handle_timer(9.99) == []
    assert c.status is None and h.proxy.next_deadline() == 10


def test_late_timer_call_fires_everything_due():
    h = harness(handshake_timeout=10)
    clients = [h.raw_client(b"GET / HTTP/1.1\r\n") for _ in range(3)]
    h.now = 100.0
    h.apply(h.proxy.handle_timer(100.0))
    assert all(c.status == 408 for c in clients)
    assert h.proxy.next_deadline() is None


def test_closing_link_is_forgotten_after_close_timeout_if_backend_never_answers():

    h = harness(close_timeout=5)
    b1 = h.backend("ws://b1/")
    c = h.client()
    b1.links[0].mute()
    c.close_ws()
    assert leftovers(h.proxy)["links"] == 1 and not b1.links[0].tcp_closed
    h.advance(5)
    assert leftovers(h.proxy)["links"] == 0 and b1.links[0].tcp_closed
    assert h.proxy.next_deadline() is None
