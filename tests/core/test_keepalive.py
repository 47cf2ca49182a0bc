"""Keepalive: the proxy answers pings itself and pings each client and link."""

from __future__ import annotations

from wspipe_core import events as ev

from .helpers import harness


def test_client_ping_is_answered_by_the_proxy_not_forwarded():
    h = harness()
    b1 = h.backend("ws://b1/")
    c = h.client()
    pongs = c.pongs
    c.ping(b"are you there")
    assert pongs == [b"are you there"]
    assert b1.links[0].received == []


def test_proxy_pings_the_client_and_closes_a_silent_one_with_1011():
    h = harness(ping_interval=5, ping_timeout=5)
    h.backend("ws://b1/")
    c = h.client()
    h.advance(5)  # answered by the fake client
    h.advance(5)
    assert c.close is None
    c.ws.receive_data = lambda data: None  # stops answering pings
    h.advance(10)  # its ping at 15 is unanswered at 20: a grace to read once more
    assert not c.tcp_closed
    h.advance(0.1)  # silent through the grace too: dead
    assert c.tcp_closed and h.proxy.stats.clients_closed[1011] == 1


def test_link_ping_timeout_is_an_interruption():
    h = harness(ping_interval=5, ping_timeout=3)
    b1 = h.backend("ws://b1/")
    b2 = h.backend("ws://b2/")
    c = h.client()
    h.advance(10)  # pings answered: nothing happens
    assert b2.links == [] and c.close is None
    b1.links[0].mute()
    h.advance(5 + 3 + 0.1)  # (the pong deadline, and its grace)
    assert len(b2.links) == 1 and c.close is None
    assert h.proxy.stats.interruptions["ping_timeout"] == 1
    c.send("moved")
    assert b2.messages() == ["moved"]


def test_paused_client_is_not_closed_for_a_pong_the_proxy_is_not_reading():
    """A slow backend pauses the client; the client's pong waits unread in the socket."""
    h = harness(write_high_water=1000, write_low_water=100, auto_ack=False,
                ping_interval=5, ping_timeout=5)
    h.backend("ws://b1/")
    c = h.client()
    h.ack()
    c.send(b"x" * 1500)  # the link's outbox is over high water: the client is paused
    assert c.paused
    with c.holding() as unread:  # the client's pongs wait unread in the socket
        for _ in range(6):
            h.advance(5)
            for key in [k for k in h.unacked if k[0] == "c"]:  # client writes go out
                h.feed(ev.ClientDataSent(key[1], h.unacked.pop(key)))
        assert c.close is None and not c.tcp_closed
    h.ack()
    for data in unread:
        c.send_raw(data)
    h.advance(30)
    assert c.close is None


def test_a_proxy_that_overslept_a_pong_deadline_reads_the_pong_before_deciding():
    """A stalled proxy (starved CPU, a GC pause) must not blame its peers for its own
    lateness: their pongs may be waiting unread. On time, the same silence is death."""
    h = harness(ping_interval=5, ping_timeout=5)
    h.backend("ws://b1/")
    c = h.client()
    with c.holding() as pongs:
        h.advance(5)  # the ping goes out; the pong is sent but the proxy has not read it
    assert len(pongs) == 1
    h.now += 20  # the proxy was not running: its timer fires 15 s after the deadline
    h.apply(h.proxy.handle_timer(h.now))
    assert not c.tcp_closed and c.close is None  # not dead yet: the pong may be unread
    c.send_raw(pongs[0])  # read now
    h.advance(10)
    assert not c.tcp_closed and c.close is None
    assert h.proxy.stats.clients_closed.get(1011, 0) == 0
    c.ws.receive_data = lambda data: None  # from now on it really is silent
    h.advance(10.1)  # timers on time: no pong is no pong (after the one grace)
    assert c.tcp_closed and h.proxy.stats.clients_closed[1011] == 1


def test_a_stall_that_ends_just_past_a_pong_deadline_reads_the_pong_before_deciding():
    """The chaos runs' 1011s: the proxy stalls right after a ping, the pong arrives
    meanwhile, and the stall ends less than LATE after the deadline. The timer fires
    before the read that carries the pong (uvloop runs due timers before it polls
    sockets): not being late enough to count as oversleeping, it used to drop the
    client. One grace lets the driver read first."""
    h = harness(ping_interval=5, ping_timeout=5)
    h.backend("ws://b1/")
    c = h.client()
    with c.holding() as pongs:
        h.advance(5)  # the ping goes out; the pong is sent but the proxy has not read it
    assert len(pongs) == 1
    h.now += 5.2  # the proxy was not running; its timer fires 0.2 s past the deadline
    h.apply(h.proxy.handle_timer(h.now))
    assert not c.tcp_closed and c.close is None
    c.send_raw(pongs[0])  # the read that was waiting
    h.advance(0.1)
    assert not c.tcp_closed and c.close is None
    h.advance(30)  # and it goes on answering on time
    assert not c.tcp_closed and h.proxy.stats.clients_closed.get(1011, 0) == 0


def test_a_backend_pong_read_within_the_grace_keeps_the_link():
    """The same for a link: a pong read in its grace is no interruption."""
    h = harness(ping_interval=5, ping_timeout=3)
    b1 = h.backend("ws://b1/")
    c = h.client()
    link = b1.links[0]
    with link.holding() as pongs:
        h.advance(5 + 3)  # its ping at 5 is unanswered (unread) at 8
    assert len(pongs) == 1
    assert h.proxy.stats.interruptions.get("ping_timeout", 0) == 0
    link.send_raw(pongs[0])
    h.advance(0.1)
    assert h.proxy.stats.interruptions.get("ping_timeout", 0) == 0 and len(b1.links) == 1
    c.send("still here")
    assert b1.messages() == ["still here"]


def test_a_pong_deadline_in_its_grace_leaves_no_deadline_behind():
    """ping_interval == ping_timeout: the next ping falls due with the pong deadline.
    While the peer is in its grace, no deadline of the proxy may stay in the past (the
    driver's timer would fire it again and again without effect)."""
    h = harness(ping_interval=5, ping_timeout=5)
    b1 = h.backend("ws://b1/")
    h.client()
    link = b1.links[0]
    with link.holding():
        h.advance(9.9)  # its ping at 5 is unanswered (unread)
        h.proxy.handle_timer(10.0)  # one timer call at 10: the grace begins
        deadline = h.proxy.next_deadline()
        assert deadline is not None and deadline > 10.0, deadline
