"""Delivery modes: what is retained, when it is confirmed, what is replayed, in which order."""

from __future__ import annotations

import pytest
from wsproto.events import CloseConnection, TextMessage

from wspipe_core import PipeEventKind, hookimpl
from wspipe_core import actions as act
from wspipe_core.testing import check_invariants

from .helpers import harness

# -- at-least-once


def test_at_least_once_retains_written_messages_until_a_pong_after_them_confirms():
    h = harness(delivery="at-least-once")
    b1 = h.backend("ws://b1/")
    c = h.client()
    with b1.links[0].holding() as pongs:  # the backend read them but has not answered yet
        c.send("one")
        c.send("two")
        assert b1.messages() == ["one", "two"]
        assert h.pipe(c).unconfirmed_messages == 2
        assert h.proxy.budget.used == len("one") + len("two")  # counted like buffered bytes
    for pong in pongs:
        b1.links[0].send_raw(pong)  # the pong of the confirmation ping: "one" confirmed
    assert h.pipe(c).unconfirmed_messages == 1
    h.advance(0.1)  # no burst to ride on: the link's timer asks about "two"
    assert h.pipe(c).unconfirmed_messages == 0 and h.proxy.budget.used == 0
    assert h.proxy.stats.confirmations >= 1


def test_at_least_once_asks_one_confirmation_per_burst_with_one_in_flight():
    h = harness(delivery="at-least-once")
    b1 = h.backend("ws://b1/")
    c = h.client()
    link = b1.links[0]
    with link.holding() as pongs:
        c.send_raw(b"".join(c.ws.send(TextMessage(data=f"m{i}")) for i in range(50)))
        c.send("later")  # a second burst while the first ping is in flight: no ping yet
    assert link.pings == [b"wspipe:c50"]  # one read, 50 messages: one ping
    link.send_raw(pongs[0])  # its pong: the rest is asked for confirm_interval later
    assert link.pings == [b"wspipe:c50"]
    h.advance(0.05)  # due, but it waits for a burst to ride on
    assert link.pings == [b"wspipe:c50"]
    h.advance(0.049)
    assert link.pings == [b"wspipe:c50"]
    h.advance(0.001)  # no burst came within another interval: the timer sends it
    assert link.pings == [b"wspipe:c50", b"wspipe:c51"]
    assert h.pipe(c).unconfirmed_messages == 0


def test_a_due_confirmation_ping_goes_out_in_the_same_write_as_the_next_burst():
    """Under load a confirmation costs no write, wakeup or timer of its own: the due
    ping follows the burst's messages in one call, which the driver joins into one
    write."""
    h = harness(delivery="at-least-once")
    b1 = h.backend("ws://b1/")
    c = h.client()
    link = b1.links[0]
    c.send("m1")  # the first ping goes out at once; its pong comes back at once
    assert link.pings == [b"wspipe:c1"]
    h.advance(0.02)
    c.send("m2")  # within the interval: retained, not asked about yet
    h.advance(0.04)  # t = 0.06: due since 0.05, no timer sent it
    assert link.pings == [b"wspipe:c1"]
    start = len(h.actions)
    c.send_raw(c.ws.send(TextMessage(data="m3")) + c.ws.send(TextMessage(data="m4")))
    sends = [a.data[0] & 0x0F for a in h.actions[start:] if isinstance(a, act.SendToLink)]
    assert sends == [0x1, 0x1, 0x9]  # the burst's two messages, then its ping, together
    assert link.pings == [b"wspipe:c1", b"wspipe:c4"]
    assert h.pipe(c).unconfirmed_messages == 0


def test_at_least_once_coalesces_confirmations_over_confirm_interval():
    """Bursts closer than confirm_interval share one ping: the cost stays low under
    load, the retained window grows by about that much traffic."""
    h = harness(delivery="at-least-once", confirm_interval=0.1)
    b1 = h.backend("ws://b1/")
    c = h.client()
    link = b1.links[0]
    c.send("m1")  # the first ping goes out at once
    for i in range(2, 12):
        h.advance(0.01)
        c.send(f"m{i}")  # ten bursts, each answered at once, within the interval
    assert link.pings == [b"wspipe:c1"] and h.pipe(c).unconfirmed_messages == 10
    h.advance(0.01)
    c.send("m12")  # the next burst after the interval carries the ping
    assert link.pings == [b"wspipe:c1", b"wspipe:c12"]  # one ping for the eleven
    assert h.pipe(c).unconfirmed_messages == 0


def test_a_zero_confirm_interval_asks_after_every_burst():
    h = harness(delivery="at-least-once", confirm_interval=0)
    b1 = h.backend("ws://b1/")
    c = h.client()
    for i in range(3):
        c.send(f"m{i}")
    assert b1.links[0].pings == [b"wspipe:c1", b"wspipe:c2", b"wspipe:c3"]


@pytest.mark.parametrize("how", ["eof", "close_1012", "ping_timeout"])
def test_at_least_once_replays_unconfirmed_messages_first_after_any_interruption(how):
    """Real frameworks drop what arrives in their last milliseconds before a Close."""
    h = harness(delivery="at-least-once", ping_interval=5, ping_timeout=5)
    b1 = h.backend("ws://b1/")
    c = h.client()
    c.send("confirmed")
    b2 = h.backend("ws://b2/")
    link = b1.links[0]
    link.mute()  # from now on it reads nothing: "lost" and "lost too" never reach the app
    c.send("lost")
    c.send("lost too")
    if how == "eof":
        link.eof()
    elif how == "close_1012":
        link.send_raw(link.ws.send(CloseConnection(code=1012)))
    else:
        h.advance(0.1 + 5 + 0.1)  # no pong to the (timer-sent) confirmation ping: its
        # ping_timeout and the grace after it pass
    c.send("after")
    assert b2.messages() == ["lost", "lost too", "after"]
    assert sum(h.proxy.stats.unconfirmed_at_interruption.values()) == 2
    assert b2.links[0].header("x-wspipe-replayed") == "2"
    assert c.close is None


def test_at_least_once_replays_unconfirmed_before_the_buffer():
    h = harness(delivery="at-least-once", backoff="fixed", backoff_base=1)
    b1 = h.backend("ws://b1/")
    c = h.client()
    b1.links[0].mute()
    c.send("written, unconfirmed")
    b1.kill()  # and b1 refuses from now on: the pipe buffers
    c.send("buffered")
    b1.mode = "accept"
    h.advance(2)
    assert b1.links[-1].received == ["written, unconfirmed", "buffered"]


def test_retained_bytes_count_against_the_buffer_limit():
    """A backend that never confirms cannot grow memory without bound."""
    h = harness(delivery="at-least-once", buffer_limit=1000, max_message_size=500)
    b1 = h.backend("ws://b1/")
    c = h.client()
    b1.links[0].mute()
    for _ in range(3):
        c.send("x" * 400)
    assert c.close is not None and c.close.code == 1013
    check_invariants(h.proxy)


# -- at-most-once


def test_at_most_once_retains_nothing_and_counts_what_may_have_been_lost():
    h = harness(ping_interval=5, ping_timeout=5)
    b1 = h.backend("ws://b1/")
    c = h.client()
    c.send("a")
    h.advance(5)  # a keepalive ping and its pong confirm "a"
    c.send("b")
    c.send("c")
    assert h.pipe(c).unconfirmed_messages == 0 and h.proxy.budget.used == 0
    b2 = h.backend("ws://b2/")
    b1.links[0].eof()
    c.send("d")
    assert b2.messages() == ["d"]  # nothing replayed: at most once
    assert sum(h.proxy.stats.possibly_lost.values()) == 2  # "b" and "c" may be lost
    assert b2.links[0].header("x-wspipe-replayed") == "0"


# -- acked


def test_acked_retains_until_the_backend_acknowledges_and_acks_never_reach_the_client():
    h = harness(delivery="acked")
    b1 = h.backend("ws://b1/")
    c = h.client()
    c.send("one")
    c.send("two")
    link = b1.links[0]
    assert link.header("x-wspipe-seq") == "1"
    link.send("\x00wspipe:ack:1")
    assert h.pipe(c).unconfirmed_messages == 1
    link.send("a reply")
    link.send("\x00wspipe:ack:2")
    assert c.received == ["a reply"]
    assert h.pipe(c).unconfirmed_messages == 0


def test_acked_replays_from_the_first_unacked_with_its_sequence_number():
    h = harness(delivery="acked")
    b1 = h.backend("ws://b1/")
    c = h.client()
    for i in range(1, 5):
        c.send(f"m{i}")
    b1.links[0].send("\x00wspipe:ack:2")  # processed m1 and m2
    b2 = h.backend("ws://b2/")
    b1.links[0].eof()
    assert b2.messages() == ["m3", "m4"]
    link = b2.links[0]
    assert (link.header("x-wspipe-seq"), link.header("x-wspipe-replayed")) == ("3", "2")
    assert link.header("x-wspipe-link") == "2"
    assert link.header("x-wspipe-session") == b1.links[0].header("x-wspipe-session")


def test_a_backend_that_never_acks_hits_the_buffer_limit_with_a_log_line_saying_why(caplog):
    h = harness(delivery="acked", buffer_limit=1000, max_message_size=500)
    b1 = h.backend("ws://b1/")
    other = h.client()
    c = h.client()
    for _ in range(3):
        c.send("x" * 400)  # read by the backend (pongs answered), never acknowledged
    assert c.close is not None and c.close.code == 1013
    assert other.close is None  # only that pipe pays
    assert b1.messages().count("x" * 400) == 2
    assert any("buffer_limit reached (1000 bytes), 2 messages (800 bytes) of it written to "
               "the backend and not acknowledged (does the backend send acks?)" in r.message
               for r in caplog.records), [r.message for r in caplog.records]
    check_invariants(h.proxy)


def test_pongs_do_not_confirm_in_acked_mode():
    h = harness(delivery="acked", ping_interval=5, ping_timeout=5)
    h.backend("ws://b1/")
    c = h.client()
    c.send("unacked")
    h.advance(5)  # a keepalive pong: not an ack
    assert h.pipe(c).unconfirmed_messages == 1


# -- the handshake signal and the mode per pipe


def test_every_link_handshake_says_which_session_it_continues_and_its_number():
    h = harness()
    b1 = h.backend("ws://b1/")
    c = h.client()
    b2 = h.backend("ws://b2/")
    b1.links[0].eof()
    first, second = b1.links[0], b2.links[0]
    session = first.header("x-wspipe-session")
    assert session and session == second.header("x-wspipe-session") == h.pipe(c).session_id
    assert (first.header("x-wspipe-link"), second.header("x-wspipe-link")) == ("1", "2")
    assert first.header("x-wspipe-delivery") == "at-most-once"
    assert first.header("x-wspipe-seq") is None  # no sequence numbers at most once


def test_the_header_prefix_is_configurable():
    h = harness(session_header_prefix="x-acme-")
    b1 = h.backend("ws://b1/")
    h.client()
    assert b1.links[0].header("x-acme-link") == "1" and b1.links[0].header("x-wspipe-link") is None


def test_a_hook_chooses_the_mode_per_pipe():
    class ByPath:
        @hookimpl
        def wspipe_delivery(self, request):
            return "at-least-once" if request.path.startswith("/orders/") else None

    h = harness(plugins=[ByPath()])
    b1 = h.backend("ws://b1/")
    orders = h.client("/orders/11111111-1111-4111-8111-111111111111")
    chat = h.client("/chat/22222222-2222-4222-8222-222222222222")
    assert (h.pipe(orders).delivery, h.pipe(chat).delivery) == ("at-least-once", "at-most-once")
    assert [link.header("x-wspipe-delivery") for link in b1.links] == [
        "at-least-once", "at-most-once"]


def test_an_interrupted_event_says_how_many_messages_wait_for_the_next_link():
    seen = []

    class Recorder:
        @hookimpl
        def wspipe_pipe_event(self, event):
            if event.kind is PipeEventKind.INTERRUPTED:
                seen.append(event.reason)

    h = harness(delivery="at-least-once", plugins=[Recorder()])
    b1 = h.backend("ws://b1/")
    c = h.client()
    b1.links[0].mute()
    c.send("x")
    b1.links[0].eof()
    assert "1 unconfirmed message(s) go first to the next link" in seen[0]
