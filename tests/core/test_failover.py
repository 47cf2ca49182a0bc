"""Interruptions and failover (design notes 4 and 5)."""

from __future__ import annotations

from wspipe_core import BackendState, PipeState

from .helpers import harness


def test_backend_eof_mid_stream_outage_messages_reach_next_backend_in_order_once():
    h = harness(backoff="fixed", backoff_base=1.0)
    b1 = h.backend("ws://b1/")
    c = h.client()
    c.send("m1")
    c.send(b"m2")
    b1.kill()  # link EOF; b1 refuses new connections
    c.send("m3")
    c.send(b"m4", fragments=2)
    c.send("m5")
    assert h.proxy.pipes()[0].state is PipeState.INTERRUPTED
    b2 = h.backend("ws://b2/")
    h.advance(0)  # the waiting pipe dials again at once: b1 (least connections), refused
    h.advance(1)  # then b2, b1 being excluded after its failure
    c.send("m6")
    assert b1.messages() == ["m1", b"m2"]
    assert b2.messages() == ["m3", b"m4", "m5", "m6"]
    assert c.close is None and c.received == []
    assert h.proxy.stats.messages_replayed == 3 and h.proxy.stats.failovers == 1


def test_backend_eof_fails_over_at_once_when_another_backend_is_up():
    h = harness()
    b1 = h.backend("ws://b1/")
    b2 = h.backend("ws://b2/")
    c = h.client()
    c.send("before")
    b1.links[0].eof()
    c.send("after")
    assert b1.messages() == ["before"] and b2.messages() == ["after"]
    assert h.proxy.stats.interruptions["eof"] == 1
    assert h.proxy.backends()[0].errors == 1


def test_message_completed_during_outage_is_replayed_whole():
    from wsproto.events import TextMessage

    h = harness(backoff="fixed", backoff_base=1.0)
    b1 = h.backend("ws://b1/")
    c = h.client()
    c.send_raw(c.ws.send(TextMessage(data="part1-", message_finished=False)))
    b1.kill()
    c.send_raw(c.ws.send(TextMessage(data="part2", message_finished=True)))
    b1.mode = "accept"
    h.advance(1)
    assert b1.links[0].received == []
    assert b1.links[1].received == ["part1-part2"]


def test_backend_close_1012_loses_and_duplicates_nothing_when_restarted():
    """A graceful restart of the only backend: close 1012, come back, carry on."""
    h = harness(backoff="fixed", backoff_base=0.5)
    b1 = h.backend("ws://b1/", echo=True)
    c = h.client()
    c.send("a")
    b1.mode = "refuse"
    b1.links[0].close_ws(1012)
    c.send("b")
    c.send("c")
    b1.mode = "accept"
    h.advance(2)
    c.send("d")
    assert b1.messages() == ["a", "b", "c", "d"]
    assert c.received == ["a", "b", "c", "d"]


def test_backend_handshake_rejected_counts_error_and_next_backend_is_tried():
    h = harness(backoff="fixed", backoff_base=0.1)
    b1 = h.backend("ws://b1/", mode="reject")
    b2 = h.backend("ws://b2/")
    c = h.client()
    assert b1.links[0].tcp_closed and b2.links == []
    h.advance(0.1)
    c.send("hi")
    assert b2.messages() == ["hi"]
    info = {b.url: b for b in h.proxy.backends()}
    assert info["ws://b1/"].errors == 1 and info["ws://b2/"].errors == 0
    assert h.proxy.stats.link_failures["handshake"] == 1


def test_connect_refused_counts_error_and_next_backend_is_tried():
    h = harness(backoff="fixed", backoff_base=0.1)
    h.backend("ws://b1/", mode="refuse")
    b2 = h.backend("ws://b2/")
    h.client()
    h.advance(0.1)
    assert len(b2.links) == 1
    assert h.proxy.backends()[0].errors == 1
    assert h.proxy.stats.link_failures["connect"] == 1


def test_black_holed_backend_times_out_handshake_and_next_backend_is_tried():
    h = harness(link_timeout=3, race_after=0, backoff="fixed", backoff_base=0.1)
    b1 = h.backend("ws://b1/", mode="blackhole")
    b2 = h.backend("ws://b2/")
    c = h.client()
    c.send("waiting")
    h.advance(2.9)
    assert b2.links == []
    h.advance(0.2)
    assert b1.links[0].tcp_closed
    h.advance(0.1)
    assert b2.messages() == ["waiting"]
    assert h.proxy.stats.link_failures["timeout"] == 1
    assert h.proxy.backends()[0].errors == 1
    # A backend that does not answer at all is ejected at once, not after eject_after.
    assert h.proxy.backends()[0].state is BackendState.EJECTED


def test_link_timeout_is_the_links_own_not_the_clients_handshake_timeout():
    h = harness(handshake_timeout=10, link_timeout=1, race_after=0)
    b1 = h.backend("ws://b1/", mode="blackhole")
    h.client()
    h.advance(1)
    assert b1.links[0].tcp_closed and h.proxy.stats.link_failures["timeout"] == 1


def test_a_slow_link_gets_a_racing_link_and_the_first_to_open_carries_the_pipe():
    h = harness(race_after=0.5, link_timeout=3)
    slow = h.backend("ws://slow/", mode="blackhole")  # least connections picks it first
    fast = h.backend("ws://fast/")
    c = h.client()
    c.send("early")
    h.advance(0.4)
    assert fast.links == []
    h.advance(0.1)  # race_after: a second link, to another backend
    assert fast.messages() == ["early"] and c.close is None
    c.send("later")
    assert fast.messages() == ["early", "later"] and slow.links[0].received == []
    assert h.pipe(c).backend_id == "b2" and h.proxy.stats.races_won == 1
    assert [b.pipes for b in h.proxy.backends()] == [0, 1]  # the slow dial no longer counts
    h.advance(2.5)  # the slow link still runs to its own timeout, so the pool learns
    assert slow.links[0].tcp_closed
    assert h.proxy.backends()[0].state is BackendState.EJECTED
    assert c.close is None and fast.messages() == ["early", "later"]


def test_a_slow_link_that_opens_after_the_racer_is_closed_and_carries_nothing():
    h = harness(race_after=0.5, link_timeout=3)
    slow = h.backend("ws://slow/", mode="blackhole")
    fast = h.backend("ws://fast/")
    c = h.client()
    h.advance(0.5)
    c.send("hello")
    assert fast.messages() == ["hello"]
    slow.links[0].answer()  # it finally accepts the upgrade
    assert slow.links[0].close is not None and slow.links[0].close.code == 1001
    assert slow.links[0].close.reason == "another link opened first"
    assert slow.links[0].received == [] and h.pipe(c).backend_id == "b2"
    assert h.proxy.backends()[0].errors == 0  # slow is not broken


def test_when_the_slow_link_fails_the_racer_carries_on_without_a_backoff():
    h = harness(race_after=0.5, link_timeout=3, backoff="fixed", backoff_base=5)
    slow = h.backend("ws://slow/", mode="blackhole")
    fast = h.backend("ws://fast/", mode="blackhole")
    c = h.client()
    h.advance(0.5)
    assert len(fast.links) == 1
    slow.links[0].eof()  # the first link fails while the racer is still dialing
    assert h.pipe(c).retry_at is None and h.proxy.stats.link_failures["handshake"] == 1
    fast.links[0].answer()
    c.send("on the racer")
    assert fast.messages() == ["on the racer"] and len(slow.links) == 1


def test_no_racing_with_race_after_0():
    h = harness(race_after=0, link_timeout=3)
    h.backend("ws://slow/", mode="blackhole")
    fast = h.backend("ws://fast/")
    h.client()
    h.advance(2.9)
    assert fast.links == [] and h.proxy.stats.races == 0


def test_backend_eof_during_handshake_counts_as_link_failure():
    h = harness(backoff="fixed", backoff_base=0.1)
    b1 = h.backend("ws://b1/", mode="blackhole")
    b2 = h.backend("ws://b2/")
    h.client()
    b1.links[0].eof()
    h.advance(0.1)
    assert len(b2.links) == 1 and h.proxy.stats.link_failures["handshake"] == 1


def test_add_backend_wakes_waiting_pipes_at_once():
    h = harness(backoff="fixed", backoff_base=20.0)
    c = h.client()
    c.send("queued")
    b1 = h.backend("ws://b1/")
    h.advance(0)
    assert b1.messages() == ["queued"]
    assert h.proxy.pipes()[0].state is PipeState.LINKED


def test_backpressured_client_is_resumed_when_its_link_is_lost():
    """Paused because the old link's outbox was full; the new link must not inherit that."""
    h = harness(write_high_water=1000, write_low_water=100, auto_ack=False)
    b1 = h.backend("ws://b1/")
    b2 = h.backend("ws://b2/")
    c = h.client()
    h.ack()
    c.send("x" * 1500)
    assert c.paused
    b1.links[0].eof()
    assert not c.paused
    c.send("more")
    assert b2.messages() == ["more"]


def test_only_backend_restarting_is_redialed_at_once_not_after_a_wasted_backoff():
    h = harness(backoff="fixed", backoff_base=5.0)
    b1 = h.backend("ws://b1/")
    c = h.client()
    c.send("m1")
    b1.links[0].close_ws(1012, "restarting")  # graceful restart: b1 is back at once
    c.send("m2")
    # Excluding the only backend would leave no candidate and wait 5 s for nothing.
    assert len(b1.links) == 2
    assert b1.messages() == ["m1", "m2"]
    assert h.proxy.pipes()[0].state is PipeState.LINKED


def test_a_handshake_deadline_the_proxy_overslept_reads_the_answer_before_failing():
    """A stalled proxy must not fail every dial at once for answers it had not read yet
    (it would then retry them all together). On time, no answer is a failure."""
    h = harness(link_timeout=3, race_after=0)
    b1 = h.backend("ws://b1/", mode="blackhole")  # answers only when told to
    c = h.client()
    c.send("waiting")
    h.now += 10  # the proxy was not running: its timer fires 7 s after the deadline
    h.apply(h.proxy.handle_timer(h.now))
    assert not b1.links[0].tcp_closed and h.proxy.stats.link_failures["timeout"] == 0
    b1.links[0].answer()  # the answer that arrived meanwhile, read now
    assert b1.messages() == ["waiting"] and c.close is None
    assert h.proxy.backends()[0].state is BackendState.UP
    h.advance(0.6)
    assert h.proxy.stats.link_failures["timeout"] == 0


def test_a_late_handshake_deadline_fails_after_its_grace_when_nothing_came():
    h = harness(link_timeout=3, race_after=0)
    b1 = h.backend("ws://b1/", mode="blackhole")
    h.client()
    h.now += 10
    h.apply(h.proxy.handle_timer(h.now))
    assert h.proxy.stats.link_failures["timeout"] == 0
    h.advance(0.1)  # the grace, on time: nothing was waiting
    assert b1.links[0].tcp_closed and h.proxy.stats.link_failures["timeout"] == 1
