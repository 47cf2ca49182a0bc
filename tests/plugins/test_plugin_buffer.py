"""Buffer policies (close, pause, drop_oldest) through wspipe_buffer_full, no sockets."""

from __future__ import annotations

import pytest
from wspipe_plugins.buffer.drop_oldest import DropOldest

from wspipe_core import ProxyConfig, hookimpl
from wspipe_core.testing import Harness

LIMIT = 1000
# Payload-only accounting so the expected counts are plain arithmetic.
SMALL = dict(buffer_limit=LIMIT, max_message_size=100, max_interruption=30.0,
             buffer_message_overhead=0)


def message(i):
    return f"{i:05d}".ljust(100, ".")  # 100 bytes, numbered


class Events:
    def __init__(self):
        self.events = []

    @hookimpl
    def wspipe_pipe_event(self, event):
        self.events.append(event)


def outage(plugins, **config):
    """A harness whose only backend is down; a client is connected."""
    h = Harness(ProxyConfig(**{**SMALL, **config}), plugins=plugins)
    backend = h.backend("ws://b1:80/", mode="refuse")
    client = h.client()
    return h, backend, client


def test_close_policy_closes_the_client_with_1013():
    # The configuration says pause; the plugin, loaded by name, decides.
    _, _, client = outage(["close"], buffer_policy="pause")
    for i in range(11):
        client.send(message(i))
    assert client.close is not None and client.close.code == 1013
    assert client.close.reason == "buffer limit reached"


def test_pause_policy_applies_backpressure_and_delivers_everything_once():
    h, backend, client = outage(["pause"])
    sent, total = 0, 60
    # A client that keeps sending, stopped only by the proxy not reading it (as TCP
    # would stop it once the socket buffers are full).
    while sent < total and not client.paused:
        client.send(message(sent))
        sent += 1
    assert client.paused and sent == 11  # 10 fit; the 11th is held back
    assert h.proxy.budget.high_water <= LIMIT
    assert [p.buffered_bytes for p in h.proxy.pipes()] == [LIMIT]
    h.advance(20.0)  # a long outage, but under max_interruption: not closed
    assert client.close is None and client.paused
    backend.mode = "accept"
    h.advance(3.0)  # the next retry links, flushes and resumes reading
    while sent < total:
        assert not client.paused
        client.send(message(sent))
        sent += 1
    assert backend.messages() == [message(i) for i in range(total)]
    assert h.proxy.budget.high_water <= LIMIT
    assert client.close is None


def test_pause_policy_still_ends_at_max_interruption():
    h, _, client = outage(["pause"], max_interruption=5.0)
    for i in range(11):
        client.send(message(i))
    assert client.paused
    h.advance(6.0)
    assert client.close is not None and client.close.code == 1013


def test_drop_oldest_keeps_the_newest_and_counts_drops():
    events = Events()
    plugin = DropOldest()
    h, backend, client = outage([events, plugin])
    for i in range(50):
        client.send(message(i))
    assert client.close is None and not client.paused
    assert plugin.dropped == 40
    (pipe,) = h.proxy.pipes()
    assert plugin.dropped_by_pipe == {pipe.id: 40}
    assert pipe.buffered_bytes == LIMIT
    backend.mode = "accept"
    h.advance(3.0)
    assert backend.messages() == [message(i) for i in range(40, 50)]
    client.close_ws()
    closed = [e for e in events.events if e.kind.value == "closed"]
    assert closed[0].extra["dropped_messages"] == 40
    assert plugin.dropped_by_pipe == {}  # forgotten when the pipe closed
    assert plugin.dropped == 40


def test_drop_oldest_counts_per_pipe():
    plugin = DropOldest()
    h = Harness(ProxyConfig(**SMALL), plugins=[plugin])
    h.backend("ws://b1:80/", mode="refuse")
    a, b = h.client(), h.client()
    for i in range(12):
        a.send(message(i))
    for i in range(15):
        b.send(message(i))
    assert sorted(plugin.dropped_by_pipe.values()) == [2, 5]
    assert plugin.dropped == 7


def test_drop_oldest_on_the_budget_drops_from_the_pipe_that_holds_the_most():
    # Two pipes share a memory budget of 1000: the second asks for room; the first,
    # holding the most, drops its oldest message for it (the fairness rule).
    plugin = DropOldest()
    h = Harness(ProxyConfig(**{**SMALL, "memory_budget": LIMIT}), plugins=[plugin])
    h.backend("ws://b1:80/", mode="refuse")
    a, b = h.client(), h.client()
    for i in range(10):
        a.send(message(i))
    b.send(message(0))
    assert a.close is None and b.close is None
    assert plugin.dropped_by_pipe == {h.pipe(a).id: 1}
    assert [p.buffered_messages for p in h.proxy.pipes()] == [9, 1]


def test_drop_oldest_closes_when_nothing_of_its_own_can_go():
    # The pipe that must pay holds only a message in progress: nothing to drop.
    from wsproto.events import TextMessage

    h = Harness(ProxyConfig(**{**SMALL, "memory_budget": LIMIT, "max_message_size": 1000}),
                plugins=[DropOldest()])
    h.backend("ws://b1:80/", mode="refuse")
    a, b = h.client(), h.client()
    a.send(message(0))
    b.send_raw(b.ws.send(TextMessage(data="x" * 800, message_finished=False)))
    b.send_raw(b.ws.send(TextMessage(data="x" * 150, message_finished=False)))
    assert b.close is not None and b.close.code == 1013
    assert a.close is None


@pytest.mark.parametrize("name", ["close", "pause", "drop_oldest"])
def test_buffer_policies_take_no_settings(name):
    from wspipe_core import ConfigError

    with pytest.raises(ConfigError, match=rf"\[plugins.{name}\] unknown key"):
        Harness(ProxyConfig(plugin_settings={name: {"limit": 1}}), plugins=[name])


def test_drop_oldest_drops_empty_messages_too():
    # Empty messages carry no payload but cost buffer_message_overhead each: the plugin
    # must see that there is something to drop (by count, not by bytes).
    plugin = DropOldest()
    _, _, client = outage([plugin], buffer_message_overhead=64)
    for _ in range(200):
        client.send(b"")
    assert client.close is None
    assert plugin.dropped == 200 - LIMIT // 64
