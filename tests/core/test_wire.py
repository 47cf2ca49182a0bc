"""The wire against wsproto: random frame streams through both, the same result required.

The proxy's open connections parse and build frames with :mod:`wspipe_core.wire`;
wsproto's ``Connection`` is the reference. Streams are drawn at random — messages
split into fragments with control frames between them, UTF-8 split across
fragments, every kind of mask key, and every kind of invalid input (bad opcodes,
reserved bits, fragmented or oversize control frames, non-minimal lengths, bad
UTF-8, bad Close codes and reasons, a mask in the wrong direction) — cut into
random reads and fed to both, which must yield the same events and end in the same
state. The same streams then go through a whole proxy built on each, which must
deliver the same messages and close with the same code, ``max_message_size``
(1009) included.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.speedups import apply_mask
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError

from wspipe_core import ProxyConfig
from wspipe_core.masking import MaskKeys, python_mask
from wspipe_core.testing import Harness, WsprotoWire
from wspipe_core.wire import Wire

MASKERS = {"python": python_mask, "c": apply_mask}

keys = st.one_of(st.sampled_from([b"\0\0\0\0", b"\xff\xff\xff\xff", b"\x01\x02\x03\x04"]),
                 st.binary(min_size=4, max_size=4))


def raw_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0,
              key: bytes | None = None, length: str = "minimal",
              declared: int | None = None) -> bytes:
    """One frame exactly as told, valid or not (``declared``: the length it claims)."""
    n = len(payload) if declared is None else declared
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mbit = 0x80 if key is not None else 0
    if length == "2" or (length == "minimal" and 126 <= n < 65536):
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    elif length == "8" or (length == "minimal" and n >= 65536):
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    elif length == "msb":
        head += bytes([mbit | 127]) + struct.pack("!Q", n | 1 << 63)
    else:
        head += bytes([mbit | n])
    if key is None:
        return head + payload
    return head + key + python_mask(payload, key)


@st.composite
def frames(draw: st.DrawFn, masked: bool) -> bytes:
    """The frames of one message (with control frames between its fragments), one
    control frame, or one invalid frame."""
    def key() -> bytes | None:
        return draw(keys) if masked else None

    kind = draw(st.sampled_from(["text", "binary", "binary", "text", "control", "bad"]))
    if kind in ("text", "binary"):
        if kind == "text":
            payload = draw(st.text(max_size=300)).encode("utf-8")
            if draw(st.integers(0, 9)) == 0:  # invalid UTF-8 somewhere
                at = draw(st.integers(0, len(payload)))
                payload = payload[:at] + draw(st.sampled_from(
                    [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80"])
                ) + payload[at:]
            opcode = 1
        else:
            payload = draw(st.binary(max_size=300))
            opcode = 2
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
        parts = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        out = b""
        for i, part in enumerate(parts):
            if i and draw(st.integers(0, 3)) == 0:
                out += raw_frame(9, draw(st.binary(max_size=20)), key=key())
            length = draw(st.sampled_from(["minimal"] * 8 + ["2", "8"]))
            out += raw_frame(opcode if i == 0 else 0, part, fin=i == len(parts) - 1,
                             key=key(), length=length)
        return out
    if kind == "control":
        opcode = draw(st.sampled_from([8, 9, 10, 9, 10]))
        if opcode == 8:
            code = draw(st.one_of(st.sampled_from([1000, 1001, 1005, 1006, 1011, 1015, 1016,
                                                    2999, 3000, 4999, 5000, 999]),
                                  st.integers(0, 65535)))
            reason = draw(st.one_of(st.text(max_size=40).map(lambda s: s.encode()),
                                    st.just(b"\xff\xfe")))
            payload = draw(st.sampled_from([b"", b"\x03", struct.pack("!H", code) + reason]))
        else:
            payload = draw(st.binary(max_size=125))
        return raw_frame(opcode, payload, key=key())
    # Invalid in one way (or, by chance, valid).
    fault = draw(st.sampled_from(["opcode", "rsv", "control-fragment", "control-long",
                                  "length-2", "length-8", "msb", "mask", "continuation",
                                  "declared"]))
    payload = draw(st.binary(max_size=200))
    if fault == "opcode":
        return raw_frame(draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])), payload,
                         key=key())
    if fault == "rsv":
        return raw_frame(draw(st.sampled_from([1, 2])), payload, rsv=draw(st.integers(1, 7)),
                         key=key())
    if fault == "control-fragment":
        return raw_frame(9, payload[:125], fin=False, key=key())
    if fault == "control-long":
        return raw_frame(10, payload.ljust(126, b"x"), key=key())
    if fault == "length-2":
        return raw_frame(2, payload[:125], key=key(), length="2")
    if fault == "length-8":
        return raw_frame(2, payload, key=key(), length="8")
    if fault == "declared":  # a long frame that never ends, its length at the limits
        length = draw(st.sampled_from(["2", "8"]))
        sizes = [125, 126, 4095, 65535] + ([65536, 2**40] if length == "8" else [])
        return raw_frame(2, payload, key=key(), declared=draw(st.sampled_from(sizes)),
                         length=length)
    if fault == "msb":
        return raw_frame(2, payload, key=key(), length="msb")
    if fault == "mask":  # masked towards a client, unmasked towards a server
        return raw_frame(2, payload, key=None if masked else b"abcd")
    return raw_frame(0, payload, key=key())  # a continuation with no message


@st.composite
def streams(draw: st.DrawFn, masked: bool) -> tuple[bytes, list[int]]:
    """A frame stream and where it is cut into reads."""
    data = b"".join(draw(st.lists(frames(masked), max_size=8)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return data, cuts


def _normal(event: object) -> tuple[object, ...]:
    if isinstance(event, TextMessage | BytesMessage):
        data = event.data if isinstance(event.data, str) else bytes(event.data)
        return (type(event).__name__, data, event.frame_finished, event.message_finished)
    if isinstance(event, Ping | Pong):
        return (type(event).__name__, bytes(event.payload))
    assert isinstance(event, CloseConnection), event
    return ("Close", int(event.code), event.reason)


def _run(conn: object, data: bytes, cuts: list[int]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
        try:
            conn.receive_data(data[a:b])  # type: ignore[attr-defined]
        except LocalProtocolError:
            out.append(("LocalProtocolError",))
        out.extend(_normal(e) for e in conn.events())  # type: ignore[attr-defined]
    out.append(("state", conn.state))  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("masker", sorted(MASKERS))
@pytest.mark.parametrize("side", ["server", "client"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_wire_parses_random_streams_exactly_as_wsproto(masker, side, data):
    client = side == "client"
    stream, cuts = data.draw(streams(masked=not client))
    reference = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
    wire = Wire(MASKERS[masker]).connection(client)
    assert _run(wire, stream, cuts) == _run(reference, stream, cuts)


sendable = st.one_of(
    # Sizes on both sides of the 2-byte and 8-byte length encodings.
    st.builds(TextMessage, data=st.text(max_size=200) | st.text(max_size=4).map(
        lambda s: s * 17000), message_finished=st.booleans()),
    st.builds(BytesMessage, data=st.binary(max_size=200) | st.binary(min_size=1, max_size=4).map(
        lambda b: b * 17000), message_finished=st.booleans()),
    st.builds(Ping, payload=st.binary(max_size=125)),
    st.builds(Pong, payload=st.binary(max_size=125)),
    st.builds(CloseConnection, code=st.sampled_from([1000, 1001, 1005, 1006, 1009, 3000, 4999]),
              reason=st.text(max_size=130)),
)


def _send_all(conn: object, events: list[object]) -> list[object]:
    out: list[object] = []
    for event in events:
        try:
            out.append(bytes(conn.send(event)))  # type: ignore[attr-defined]
        except (LocalProtocolError, TypeError) as exc:
            out.append(type(exc).__name__)
    return out


def _decode(chunks: list[object], client: bool) -> list[object]:
    peer = Connection(ConnectionType.SERVER if client else ConnectionType.CLIENT)
    out: list[object] = []
    for chunk in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
            continue
        try:
            peer.receive_data(chunk)
        except LocalProtocolError:
            out.append("closed")
        out.extend(_normal(e) for e in peer.events())
    return out


@pytest.mark.parametrize("masker", sorted(MASKERS))
@pytest.mark.parametrize("side", ["server", "client"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(sendable, max_size=8))
def test_the_wire_builds_frames_that_decode_as_wsprotos(masker, side, events):
    client = side == "client"
    wire = Wire(MASKERS[masker]).connection(client)
    reference = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
    ours, theirs = _send_all(wire, events), _send_all(reference, events)
    assert _decode(ours, client) == _decode(theirs, client)
    assert wire.state is reference.state


def test_masking_keys_are_fresh_and_four_bytes():
    source = MaskKeys()
    drawn = [source.next() for _ in range(2000)]
    assert {len(k) for k in drawn} == {4}
    assert len(set(drawn)) > 1990  # 2,000 draws from 2**32: a repeat is rare


@pytest.mark.parametrize("masker", sorted(MASKERS))
def test_maskers_agree(masker):
    for n in (0, 1, 3, 4, 5, 125, 126, 65536, 65537):
        payload = bytes(range(256)) * (n // 256 + 1)
        payload = payload[:n]
        key = b"\x9a\x01\xff\x10"
        masked = MASKERS[masker](payload, key)
        assert masked == bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        assert MASKERS[masker](masked, key) == payload


# The whole proxy on each frame layer.


def _proxy_run(wire: object, stream: bytes, cuts: list[int], inbound: bool):
    h = Harness(ProxyConfig(ping_interval=0, resume_window=0, max_message_size=400,
                            buffer_message_overhead=0), wire=wire)  # type: ignore[arg-type]
    backend = h.backend("ws://b1:80/")
    client = h.client("/11111111-1111-4111-8111-111111111111")
    (link,) = backend.live
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        (client if inbound else link).send_raw(stream[a:b])
    close = client.close
    link_close = link.close
    return (backend.messages(), client.received,
            None if close is None else int(close.code),
            None if link_close is None else int(link_close.code),
            client.tcp_closed, [bytes(p) for p in client.pings])


@pytest.mark.parametrize("direction", ["client_sends", "backend_sends"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_proxy_on_the_wire_relays_and_closes_as_one_on_wsproto(direction, data):
    inbound = direction == "client_sends"
    stream, cuts = data.draw(streams(masked=inbound))
    fast = _proxy_run(Wire(apply_mask), stream, cuts, inbound)
    assert fast == _proxy_run(WsprotoWire(), stream, cuts, inbound)
