"""wspipe_backend's ack channel without a framework: numbering, deduplication, acks."""

from __future__ import annotations

import anyio
import pytest

from wspipe_backend import AckedSession, MemoryStore, Message, acked_stream

ACKED = {"X-Wspipe-Session": "s1", "X-Wspipe-Link": "2", "X-Wspipe-Delivery": "acked",
         "X-Wspipe-Seq": "5"}


async def run(headers, incoming, store, *, stop_after: int | None = None):
    """Feed ``incoming`` to acked_stream; what was yielded and what was sent back."""
    queue = list(incoming)
    sent: list[str] = []

    async def receive():
        return queue.pop(0) if queue else None

    async def send_text(text: str) -> None:
        sent.append(text)

    got: list[Message] = []
    async for message in acked_stream(receive, send_text, AckedSession(headers), store):
        if stop_after is not None and len(got) == stop_after:
            break  # not processed: never acked
        got.append(message)
    return got, sent


def test_messages_are_numbered_from_the_links_first_number_and_acked_once_processed():
    got, sent = anyio.run(run, ACKED, ["a", b"b", "c"], MemoryStore())
    assert [(m.session, m.link, m.seq, m.data) for m in got] == [
        ("s1", 2, 5, "a"), ("s1", 2, 6, b"b"), ("s1", 2, 7, "c")]
    assert sent == ["\x00wspipe:ack:5", "\x00wspipe:ack:6", "\x00wspipe:ack:7"]


def test_a_replay_of_what_the_session_processed_is_skipped_and_acked_again():
    store = MemoryStore()
    anyio.run(run, ACKED, ["a", "b"], store)  # 5 and 6 processed on link 2
    replay = {**ACKED, "X-Wspipe-Link": "3", "X-Wspipe-Seq": "6"}  # the ack of 6 was lost
    got, sent = anyio.run(run, replay, ["b", "c"], store)
    assert [(m.seq, m.data) for m in got] == [(7, "c")]
    assert sent == ["\x00wspipe:ack:6", "\x00wspipe:ack:7"]


def test_a_message_the_loop_did_not_finish_is_neither_committed_nor_acked():
    store = MemoryStore()
    got, sent = anyio.run(lambda: run(ACKED, ["a", "b", "c"], store, stop_after=1))
    assert [m.seq for m in got] == [5] and sent == ["\x00wspipe:ack:5"]
    assert anyio.run(store.last, "s1") == 5


@pytest.mark.parametrize("headers", [
    {},  # not behind wspipe
    {"x-wspipe-session": "s1", "x-wspipe-link": "1", "x-wspipe-delivery": "at-most-once"},
])
def test_without_numbering_messages_pass_through_and_nothing_is_acked(headers):
    got, sent = anyio.run(run, headers, ["a", "a"], MemoryStore())
    assert [(m.seq, m.data) for m in got] == [(0, "a"), (0, "a")] and sent == []


def test_at_least_once_is_deduplicated_but_never_acked():
    """(An ack in that mode would reach the client.)"""
    headers = {**ACKED, "X-Wspipe-Delivery": "at-least-once"}
    store = MemoryStore()
    anyio.run(run, headers, ["a"], store)
    got, sent = anyio.run(run, headers, ["a", "b"], store)  # 5 replayed
    assert [m.seq for m in got] == [6] and sent == []


def test_the_prefixes_are_configurable():
    session = AckedSession({"h-session": "s", "h-seq": "1", "h-delivery": "acked"},
                           header_prefix="H-", ack_prefix="ACK ")
    assert session.acked and session.number("x").seq == 1 and session.ack(1) == "ACK 1"


def test_the_memory_store_is_bounded():
    store = MemoryStore(max_sessions=2)
    for name in ("a", "b", "c"):
        assert anyio.run(store.commit, Message(name, 1, 1, "x"))
    assert [anyio.run(store.last, n) for n in ("a", "b", "c")] == [0, 1, 1]
    assert not anyio.run(store.commit, Message("c", 1, 1, "again"))
