"""Shared helpers of the core tests: configs, fixed client ids, hand-made frames."""

from __future__ import annotations

import struct

import h11

from wspipe_core import ProxyConfig
from wspipe_core import actions as act
from wspipe_core.testing import Harness

ID1 = "11111111-1111-4111-8111-111111111111"
ID2 = "22222222-2222-4222-8222-222222222222"


def config(**overrides: object) -> ProxyConfig:
    """A config with keepalive pings and client resume off (tests that need them turn
    them on) and buffers counted in payload bytes only, so tests can do byte arithmetic (the
    per-message overhead has tests of its own in test_buffer.py)."""
    overrides.setdefault("ping_interval", 0)
    overrides.setdefault("buffer_message_overhead", 0)
    # A vanished client ends its session at once unless a test turns resume on (the
    # default, 30 s, is pinned by tests/core/test_resume.py).
    overrides.setdefault("resume_window", 0)
    return ProxyConfig(**overrides)  # type: ignore[arg-type]


def harness(**overrides: object) -> Harness:
    auto_ack = bool(overrides.pop("auto_ack", True))
    plugins = overrides.pop("plugins", ())
    return Harness(config(**overrides), plugins=plugins, auto_ack=auto_ack)  # type: ignore[arg-type]


def masked_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A client-to-server frame built by hand (mask key 0), for payloads wsproto won't send."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\x00\x00\x00\x00" + payload


def apply(h: Harness, actions: list[act.Action]) -> None:
    """Execute actions returned by a direct ``Proxy`` call and route the answers."""
    h.apply(actions)


def upgrade_request(target: str, headers: list[tuple[str, str]]) -> bytes:
    """A client upgrade request with extra ``headers``, built with h11."""
    conn = h11.Connection(h11.CLIENT)
    return conn.send(h11.Request(method="GET", target=target, headers=[
        ("Host", "proxy"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
        *headers]))
