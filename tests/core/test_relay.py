"""The relay (design note 3): whole messages, text stays text, fragments assembled."""

from __future__ import annotations

import pytest

from .helpers import harness

MESSAGES = ["hello", "", "héllo wörld ✓", b"\x00\x01\xff", b"", b"x" * 70_000, "y" * 300]


@pytest.mark.parametrize("client_sends", [True, False], ids=["client->backend", "backend->client"])
def test_text_and_binary_are_relayed_unchanged(client_sends):
    h = harness()
    b1 = h.backend("ws://b1/")
    c = h.client()
    link = b1.links[0]
    for message in MESSAGES:
        (c.send if client_sends else link.send)(message)
    received = link.received if client_sends else c.received
    assert received == MESSAGES
    assert [type(m) for m in received] == [type(m) for m in MESSAGES]


@pytest.mark.parametrize("client_sends", [True, False], ids=["client->backend", "backend->client"])
@pytest.mark.parametrize("message", ["fragmented text ✓" * 20, b"fragmented binary" * 20])
def test_fragmented_message_arrives_whole(client_sends, message):
    h = harness()
    b1 = h.backend("ws://b1/")
    c = h.client()
    link = b1.links[0]
    (c.send if client_sends else link.send)(message, fragments=7)
    (c.send if client_sends else link.send)("after")
    assert (link.received if client_sends else c.received) == [message, "after"]


def test_fragments_arriving_one_read_at_a_time_are_forwarded_only_when_complete():
    h = harness()
    b1 = h.backend("ws://b1/")
    c = h.client()
    from wsproto.events import TextMessage

    first = c.ws.send(TextMessage(data="abc", message_finished=False))
    rest = c.ws.send(TextMessage(data="def", message_finished=True))
    c.send_raw(first)
    assert b1.links[0].received == []
    c.send_raw(rest)
    assert b1.links[0].received == ["abcdef"]


def test_backend_dying_mid_message_never_leaves_the_client_a_torn_message():
    from wsproto.events import BytesMessage

    h = harness()
    b1 = h.backend("ws://b1/")
    b2 = h.backend("ws://b2/")
    c = h.client()
    link = b1.links[0]
    link.send_raw(link.ws.send(BytesMessage(data=b"first half", message_finished=False)))
    link.eof()
    b2.links[0].send(b"whole", fragments=2)
    assert c.received == [b"whole"]


