"""The Proxy's driver-facing contract: events in, actions out, misuse raises UsageError."""

from __future__ import annotations

import pytest

from wspipe_core import Proxy, ProxyConfig, UsageError
from wspipe_core import actions as act
from wspipe_core import events as ev

from .helpers import harness


def test_unknown_event_raises_usage_error():
    proxy = Proxy(ProxyConfig())
    with pytest.raises(UsageError):
        proxy.handle(ev.Event(), 0.0)


def test_client_connection_id_reused_while_live_raises_usage_error():
    proxy = Proxy(ProxyConfig())
    proxy.handle(ev.ClientConnected(1), 0.0)
    with pytest.raises(UsageError):
        proxy.handle(ev.ClientConnected(1), 0.0)


@pytest.mark.parametrize("event", [
    ev.ClientDataReceived(7, b"x"), ev.ClientEOF(7), ev.ClientDataSent(7, 3),
    ev.LinkConnected(7), ev.LinkConnectFailed(7, "no"), ev.LinkDataReceived(7, b"x"),
    ev.LinkEOF(7), ev.LinkDataSent(7, 3),
])
def test_events_about_unknown_ids_are_ignored(event):
    proxy = Proxy(ProxyConfig())
    assert proxy.handle(event, 0.0) == []


def test_config_backends_are_registered_at_start():
    proxy = Proxy(ProxyConfig(backends=("ws://a/", "wss://b:8443/")))
    assert [b.url for b in proxy.backends()] == ["ws://a/", "wss://b:8443/"]


def test_events_after_a_pipe_ended_are_ignored():
    h = harness()
    b1 = h.backend("ws://b1/")
    c = h.client()
    link_id = b1.links[0].link
    c.close_ws()
    assert h.proxy.handle(ev.ClientDataReceived(c.conn, b"late"), h.now) == []
    assert h.proxy.handle(ev.LinkEOF(link_id), h.now) == []


def test_close_actions_come_after_the_data_they_follow():
    h = harness()
    h.backend("ws://b1/")
    c = h.client()
    start = len(h.actions)
    c.send_raw(b"\x88\x80\x00\x00\x00\x00")  # a Close frame without a code
    mine = [a for a in h.actions[start:] if getattr(a, "conn", None) == c.conn]
    assert isinstance(mine[-1], act.CloseClient)
    assert any(isinstance(a, act.SendToClient) for a in mine[:-1])
