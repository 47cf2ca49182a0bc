"""Test helpers: run a :class:`Proxy` against fake wsproto peers, with explicit time.

No sockets, no sleeping. A :class:`Harness` owns a proxy, routes every action it
returns to the right fake peer, feeds the peers' answers back as events, and
steps time only when told. Fake peers speak real WebSocket through wsproto, so
what they record is what a real peer would decode. Plugin authors use it too::

    h = Harness(ProxyConfig(), plugins=[MyStrategy()])
    b1, b2 = h.backend("ws://b1:80/"), h.backend("ws://b2:80/")
    client = h.client()
    client.send("hi")
    assert b1.messages() == ["hi"]
"""

from __future__ import annotations

from .harness import Harness
from .invariants import check_invariants, leftovers
from .peers import BackendLink, FakeBackend, FakeClient, encode
from .reference import WsprotoWire

__all__ = ["BackendLink", "FakeBackend", "FakeClient", "Harness", "WsprotoWire",
           "check_invariants", "encode", "leftovers"]
