"""Flow control: a side is not read while the other side's outbox is over high water."""

from __future__ import annotations

from wspipe_core import actions as act
from wspipe_core import events as ev

from .helpers import harness


def _actions(h, kind):
    return [a for a in h.actions if isinstance(a, kind)]


def test_client_paused_at_high_water_of_link_outbox_and_resumed_at_low_water():
    h = harness(write_high_water=1000, write_low_water=100, auto_ack=False)
    b1 = h.backend("ws://b1/")
    c = h.client()
    h.ack()
    c.send("a" * 600)
    assert not c.paused
    c.send("b" * 600)  # the link's outbox is over 1000 unsent bytes
    assert c.paused and len(_actions(h, act.PauseClient)) == 1
    h.ack()  # the driver wrote it all
    assert not c.paused and len(_actions(h, act.ResumeClient)) == 1
    assert b1.messages() == ["a" * 600, "b" * 600]


def test_client_stays_paused_until_link_outbox_is_below_low_water():
    h = harness(write_high_water=1000, write_low_water=100, auto_ack=False)
    b1 = h.backend("ws://b1/")
    c = h.client()
    h.ack()
    c.send("a" * 1200)
    assert c.paused
    link_id = b1.links[0].link
    pending = h.unacked.pop(("l", link_id))
    h.feed(ev.LinkDataSent(link_id, pending - 150))  # 150 bytes still unsent
    assert c.paused
    h.feed(ev.LinkDataSent(link_id, 50))
    assert not c.paused


def test_link_paused_at_high_water_of_client_outbox_and_resumed_at_low_water():
    h = harness(write_high_water=1000, write_low_water=100, auto_ack=False)
    b1 = h.backend("ws://b1/")
    c = h.client()
    h.ack()
    link = b1.links[0]
    link.send(b"x" * 700)
    assert _actions(h, act.PauseLink) == []
    link.send(b"y" * 700)
    assert [a.link for a in _actions(h, act.PauseLink)] == [link.link]
    h.ack()
    assert [a.link for a in _actions(h, act.ResumeLink)] == [link.link]
    assert c.received == [b"x" * 700, b"y" * 700]


def test_new_link_is_paused_at_once_if_client_outbox_is_over_high_water():
    h = harness(write_high_water=1000, write_low_water=100, auto_ack=False)
    b1 = h.backend("ws://b1/")
    b2 = h.backend("ws://b2/")
    h.client()
    h.ack()
    b1.links[0].send(b"x" * 1500)
    b1.links[0].eof()
    assert [a.link for a in _actions(h, act.PauseLink)] == [b1.links[0].link, b2.links[0].link]
    h.ack()
    assert [a.link for a in _actions(h, act.ResumeLink)] == [b2.links[0].link]


def test_replayed_buffer_over_high_water_pauses_client_until_written():
    h = harness(write_high_water=1000, write_low_water=100, auto_ack=False,
                backoff="fixed", backoff_base=1)
    b1 = h.backend("ws://b1/", mode="refuse")
    c = h.client()
    h.ack()
    for _ in range(3):
        c.send("z" * 500)  # buffered: the client is read, nothing to backpressure yet
    assert not c.paused
    b1.mode = "accept"
    h.advance(2)  # replays 1500 bytes to the new link
    assert c.paused
    h.ack()
    assert not c.paused and b1.messages() == ["z" * 500] * 3


def test_paused_link_is_not_declared_dead_for_a_pong_the_proxy_is_not_reading():
    """A slow client pauses the link; the backend's pong waits unread in the socket."""

    h = harness(write_high_water=1000, write_low_water=100, auto_ack=False,
                ping_interval=5, ping_timeout=5)
    b1 = h.backend("ws://b1/")
    b2 = h.backend("ws://b2/")
    c = h.client()
    h.ack()
    link = b1.links[0]
    link.send(b"x" * 1500)  # the client does not read: its outbox is over high water
    assert _actions(h, act.PauseLink)
    with link.holding() as unread:  # the driver does not read a paused link
        h.advance(30)
    assert b2.links == [] and c.close is None
    assert h.proxy.stats.interruptions.total() == 0
    assert h.proxy.backends()[0].errors == 0
    h.ack()  # the client caught up: the link is read again
    for data in unread:
        link.send_raw(data)
    h.advance(30)
    assert b2.links == [] and c.close is None


def test_a_ping_flood_from_a_client_that_does_not_read_gets_no_more_pongs_over_high_water():
    h = harness(write_high_water=1000, write_low_water=100, auto_ack=False)
    h.backend("ws://b1/")
    c = h.client()
    h.ack()
    for _ in range(2000):
        c.ping(b"x" * 100)
    sent = sum(len(a.data) for a in _actions(h, act.SendToClient)[1:])  # after the 101
    assert 1000 < sent <= 1000 + 102  # one pong past the mark, then none
    h.ack()
    c.ping(b"again")
    assert _actions(h, act.SendToClient)[-1].data.endswith(b"again")


def test_a_ping_flood_from_a_backend_that_does_not_read_gets_no_more_pongs_over_high_water():
    h = harness(write_high_water=1000, write_low_water=100, auto_ack=False)
    b1 = h.backend("ws://b1/")
    h.client()
    h.ack()
    link = b1.links[0]
    from wsproto.events import Ping

    for _ in range(2000):
        link.send_raw(link.ws.send(Ping(payload=b"x" * 100)))
    sent = sum(len(a.data) for a in _actions(h, act.SendToLink) if a.link == link.link)
    handshake = len(_actions(h, act.SendToLink)[0].data)
    assert 1000 < sent - handshake <= 1000 + 106  # masked pong frames carry 4 more bytes


def test_migrating_a_link_paused_for_a_slow_client_reads_it_again_until_its_close():
    h = harness(write_high_water=64 * 1024, write_low_water=16 * 1024, auto_ack=False)
    b1 = h.backend("ws://b1/")
    c = h.client()
    h.ack()
    old = b1.links[0]
    for _ in range(20):
        old.send(b"x" * 8192)  # the client does not read: the link gets paused
    assert any(isinstance(a, act.PauseLink) and a.link == old.link for a in h.actions)
    h.backend("ws://b2/")
    mark = len(h.actions)
    h.apply(h.proxy.remove_backend("ws://b1/", migrate=True, now=h.now))
    # Otherwise what b1 wrote before seeing our Close would stay unread and be lost.
    assert any(isinstance(a, act.ResumeLink) and a.link == old.link for a in h.actions[mark:])
    h.ack()
    assert len(c.received) == 20
