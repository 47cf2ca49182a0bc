"""Buffers and memory: per-pipe limit, global budget, buffer policies (design note 6)."""

from __future__ import annotations

import pytest

from wspipe_core import BufferFullAction, PipeEventKind, hookimpl
from wspipe_core.buffer import MemoryBudget, ReplayBuffer

from .helpers import harness

# -- the data structures


def test_replay_buffer_drains_in_arrival_order_and_counts_payload_bytes():
    buf = ReplayBuffer()
    buf.append("héllo", seq=1)
    buf.append(b"\x00\x01", seq=2)
    buf.append("x", size=10, seq=3)
    assert len(buf) == 3 and buf.bytes == 6 + 2 + 10
    assert (buf.first_seq, buf.last_seq) == (1, 3)
    assert buf.drain() == [(1, "héllo", 6), (2, b"\x00\x01", 2), (3, "x", 10)]
    assert len(buf) == 0 and buf.bytes == 0 and buf.first_seq is None and buf.last_seq == 0


def test_replay_buffer_drop_oldest_returns_its_size():
    buf = ReplayBuffer()
    buf.append(b"aaaa")
    buf.append(b"bb")
    assert buf.drop_oldest() == 4
    assert buf.bytes == 2 and [m for _, m, _ in buf.drain()] == [b"bb"]


def test_replay_buffer_confirms_up_to_a_sequence_number_and_takes_items_back_in_front():
    retained, waiting = ReplayBuffer(), ReplayBuffer()
    for seq in (1, 2, 3):
        retained.append(b"r", seq=seq)
    waiting.append(b"w", seq=4)
    assert retained.confirm(2) == 1 + 1 and retained.first_seq == 3 and retained.bytes == 1
    waiting.prepend(retained.drain())
    assert [seq for seq, _, _ in waiting.drain()] == [3, 4]


def test_a_confirmation_of_everything_empties_the_replay_buffer_at_once():
    retained = ReplayBuffer(overhead=10)
    for seq in (5, 6, 7):
        retained.append(b"rr", seq=seq)
    assert retained.confirm(9) == 3
    assert len(retained) == 0 and retained.bytes == 0 and retained.cost == 0
    assert retained.last_seq == 0 and retained.first_seq is None
    retained.append(b"r", seq=8)  # and it takes messages again
    assert retained.confirm(7) == 0 and retained.confirm(8) == 1 and not len(retained)


class _Holder:
    def __init__(self) -> None:
        self.held = 0


def test_memory_budget_counts_what_each_holder_holds_and_knows_the_largest():
    budget = MemoryBudget(100)
    a, b = _Holder(), _Holder()
    assert budget.fits(100) and not budget.fits(101) and budget.largest() is None
    budget.update(a, 60)
    assert budget.fits(40) and not budget.fits(41)
    budget.update(b, 30)
    assert budget.largest() is a and budget.holders == 2
    budget.update(a, 10)
    assert budget.largest() is b
    assert budget.used == 40 and budget.high_water == 90
    budget.update(b, 0)
    budget.update(a, 0)
    assert budget.largest() is None and budget.used == 0 and budget.holders == 0


# -- through the proxy


def _outage(h, *urls):
    """Backends that refuse, so every pipe buffers."""
    return [h.backend(url, mode="refuse") for url in urls]


def test_buffer_limit_counts_in_progress_fragments():
    from wsproto.events import BytesMessage

    h = harness(buffer_limit=1000, max_message_size=1000)
    _outage(h, "ws://b1/")
    c = h.client()
    c.send(b"a" * 600)
    c.send_raw(c.ws.send(BytesMessage(data=b"b" * 300, message_finished=False)))
    assert h.proxy.pipes()[0].buffered_bytes == 600 and h.proxy.budget.used == 900
    c.send_raw(c.ws.send(BytesMessage(data=b"b" * 300, message_finished=False)))
    assert c.close is not None and c.close.code == 1013


def test_global_memory_budget_is_enforced_across_pipes():
    h = harness(buffer_limit=1000, max_message_size=1000, memory_budget=1450)
    _outage(h, "ws://b1/")
    a, b = h.client(), h.client()
    a.send(b"a" * 900)
    b.send(b"b" * 500)
    assert h.proxy.budget.used == 1400
    a.send(b"a" * 100)  # within a's own limit, over the budget, and a holds the most
    assert a.close is not None and a.close.code == 1013
    assert b.close is None
    assert h.proxy.budget.used == 500 and h.proxy.budget.high_water == 1400


def test_when_the_budget_is_short_the_largest_holder_pays_not_the_one_asking():
    """A pipe holding less than another is never closed because of the other's flood."""
    h = harness(buffer_limit=1000, max_message_size=1000, memory_budget=1500)
    _outage(h, "ws://b1/")
    greedy, modest = h.client(), h.client()
    greedy.send(b"g" * 900)
    modest.send(b"m" * 500)
    modest.send(b"m" * 200)  # over the budget: greedy (900) pays, not modest (500)
    assert greedy.close is not None and greedy.close.code == 1013
    assert modest.close is None and h.pipe(modest).buffered_bytes == 700
    assert h.proxy.stats.budget_evictions == 1
    assert h.proxy.budget.used == 700


def test_pause_policy_pauses_client_loses_nothing_and_resumes_after_flush():
    h = harness(buffer_policy="pause", buffer_limit=1000, max_message_size=400,
                backoff="fixed", backoff_base=1)
    (b1,) = _outage(h, "ws://b1/")
    c = h.client()
    sent = [f"{i}:" + "p" * 300 for i in range(6)]
    for message in sent:
        c.send(message)
    assert c.paused and c.close is None
    assert h.proxy.pipes()[0].buffered_bytes <= 1000
    b1.mode = "accept"
    h.advance(2)  # the retry after the failed attempt excludes b1; the next one takes it
    assert not c.paused
    c.send("last")
    assert b1.messages() == [*sent, "last"]
    assert h.proxy.budget.used == 0


def test_pause_policy_on_global_budget_resumes_when_budget_is_freed():
    """A pipe paused because *other* pipes filled the budget reads again once they free it."""
    from wsproto.events import TextMessage

    h = harness(buffer_policy="pause", buffer_limit=1000, max_message_size=1000,
                memory_budget=1200, backoff="fixed", backoff_base=1)
    b1 = h.backend("ws://b1/")
    linked = h.client()
    b1.mode = "refuse"
    waiting = h.client()
    waiting.send("w" * 900)  # buffered: the budget is nearly used up
    linked.send_raw(linked.ws.send(TextMessage(data="a" * 400, message_finished=False)))
    assert linked.paused  # its in-progress message does not fit in the budget
    b1.mode = "accept"
    h.advance(2)  # the waiting pipe links and flushes: the budget is free again
    assert b1.links[-1].received == ["w" * 900]
    assert not linked.paused
    linked.send_raw(linked.ws.send(TextMessage(data="b", message_finished=True)))
    assert b1.links[0].received == ["a" * 400 + "b"]
    assert h.proxy.budget.used == 0


def test_drop_oldest_policy_drops_oldest_messages_and_counts_them():
    events = []

    class Recorder:
        @hookimpl
        def wspipe_pipe_event(self, event):
            events.append(event)

    h = harness(buffer_policy="drop_oldest", buffer_limit=1000, max_message_size=500,
                backoff="fixed", backoff_base=1, plugins=[Recorder()])
    (b1,) = _outage(h, "ws://b1/")
    c = h.client()
    for i in range(5):
        c.send(f"{i}" + "d" * 299)
    assert c.close is None
    assert h.proxy.stats.messages_dropped == 2
    b1.mode = "accept"
    h.advance(2)
    assert b1.messages() == [f"{i}" + "d" * 299 for i in (2, 3, 4)]
    resumed = [e for e in events if e.kind is PipeEventKind.LINKED]
    assert resumed[-1].extra["dropped_messages"] == 2


def test_drop_oldest_with_nothing_left_to_drop_closes_with_1013():
    from wsproto.events import BytesMessage

    h = harness(buffer_policy="drop_oldest", buffer_limit=1000, max_message_size=1000,
                memory_budget=1000)
    _outage(h, "ws://b1/")
    a, b = h.client(), h.client()
    a.send(b"a" * 300)
    b.send_raw(b.ws.send(BytesMessage(data=b"b" * 600, message_finished=False)))
    # b holds the most, only a message in progress: nothing of its own to drop.
    b.send_raw(b.ws.send(BytesMessage(data=b"b" * 200, message_finished=False)))
    assert b.close is not None and b.close.code == 1013
    assert a.close is None and h.proxy.budget.used == 300


def test_drop_oldest_on_the_budget_drops_from_the_largest_holder():
    h = harness(buffer_policy="drop_oldest", buffer_limit=1000, max_message_size=1000,
                memory_budget=1000)
    _outage(h, "ws://b1/")
    big, small = h.client(), h.client()
    for _ in range(4):
        big.send(b"x" * 200)
    small.send(b"y" * 200)
    small.send(b"y" * 150)  # over the budget: big drops its oldest, small keeps all
    assert (h.pipe(big).buffered_messages, h.pipe(small).buffered_messages) == (3, 2)
    assert big.close is None and small.close is None


@pytest.mark.parametrize("answer", [BufferFullAction.CLOSE, "nonsense", None])
def test_buffer_full_hook_answers_other_than_an_action_close(answer):
    class Policy:
        @hookimpl(tryfirst=True)
        def wspipe_buffer_full(self):
            return answer

    h = harness(buffer_policy="pause", buffer_limit=1000, max_message_size=1000,
                plugins=[Policy()])
    _outage(h, "ws://b1/")
    c = h.client()
    c.send(b"x" * 600)
    c.send(b"x" * 600)
    if answer is None:  # None falls through to the built-in policy (pause)
        assert c.paused and c.close is None
    else:
        assert c.close is not None and c.close.code == 1013


def test_a_flood_of_empty_messages_during_an_outage_hits_the_limit_with_1013():
    # Payload bytes alone would let empty messages pile up without bound; each
    # buffered message is also charged buffer_message_overhead bytes.
    h = harness(buffer_limit=6400, max_message_size=100, buffer_message_overhead=64,
                backoff="fixed", backoff_base=1)
    _outage(h, "ws://b1/")
    c, other = h.client(), h.client()
    for _ in range(100):
        c.send(b"")
    assert c.close is None and h.proxy.budget.used == 6400
    c.send(b"")
    assert c.close is not None and (c.close.code, c.close.reason) == (
        1013, "buffer limit reached")
    assert other.close is None and h.proxy.budget.used == 0


def test_buffered_bytes_report_payload_while_limits_count_the_overhead():
    h = harness(buffer_limit=10_000, max_message_size=1000, buffer_message_overhead=64,
                backoff="fixed",
                backoff_base=1)
    (b1,) = _outage(h, "ws://b1/")
    c = h.client()
    c.send(b"abc")
    c.send("de")
    assert h.proxy.pipes()[0].buffered_bytes == 5
    assert h.proxy.budget.used == 5 + 2 * 64
    b1.mode = "accept"
    h.advance(2)
    assert b1.messages() == [b"abc", "de"] and h.proxy.budget.used == 0


def test_pause_on_the_memory_budget_of_linked_pipes_ends_after_max_interruption():
    """Two linked pipes each hold a fragment that fills the budget: neither can ever
    free it, so the pause must not last for ever (nor hide from keepalive)."""
    from wsproto.events import BytesMessage

    kib = 1024
    h = harness(buffer_policy="pause", memory_budget=100 * kib, buffer_limit=100 * kib,
                max_message_size=80 * kib, max_interruption=30)
    h.backend("ws://b1/")
    a, b = h.client(), h.client()

    def fragment(client, n):
        client.send_raw(client.ws.send(BytesMessage(data=b"x" * n, message_finished=False)))

    fragment(a, 50 * kib)
    fragment(b, 50 * kib)
    fragment(a, 10 * kib)
    fragment(b, 10 * kib)
    assert a.paused and b.paused
    h.advance(29)
    assert a.close is None and b.close is None
    h.advance(2)
    assert (a.close.code, a.close.reason) == (1013, "buffer limit reached")
    assert (b.close.code, b.close.reason) == (1013, "buffer limit reached")
    assert h.proxy.budget.used == 0


def test_buffer_overflow_closes_only_that_client_with_1013():
    h = harness(buffer_limit=1000, max_message_size=500, backoff="fixed", backoff_base=1)
    (b1,) = _outage(h, "ws://b1/")
    greedy, modest = h.client(), h.client()
    modest.send("m" * 300)
    for _ in range(3):
        greedy.send("g" * 400)
    assert greedy.close is not None
    assert (greedy.close.code, greedy.close.reason) == (1013, "buffer limit reached")
    assert modest.close is None
    b1.mode = "accept"
    h.advance(2)
    assert b1.messages() == ["m" * 300]
    assert h.proxy.budget.used == 0
