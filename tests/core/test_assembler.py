"""Message assembly and payload accounting."""

from __future__ import annotations

import tracemalloc

from wsproto.events import BytesMessage, TextMessage

from wspipe_core.assembler import MessageAssembler, payload_size


def test_payload_size_counts_utf8_bytes_of_text():
    assert payload_size("abc") == 3
    assert payload_size("é✓") == 2 + 3
    assert payload_size(b"\x00\x01") == 2
    assert payload_size(bytearray(5)) == 5


def test_whole_message_passes_through_without_copy():
    asm = MessageAssembler()
    data = b"whole"
    assert asm.feed(BytesMessage(data=data), 5) is data
    assert asm.size == 0


def test_fragments_are_joined_keeping_the_kind():
    asm = MessageAssembler()
    assert asm.feed(TextMessage(data="ab", message_finished=False), 2) is None
    assert asm.size == 2
    assert asm.feed(TextMessage(data="c", message_finished=True), 1) == "abc"
    assert asm.size == 0
    assert asm.feed(BytesMessage(data=b"x", message_finished=False), 1) is None
    assert asm.feed(BytesMessage(data=b"y", message_finished=True), 1) == b"xy"  # no copy


def test_reset_forgets_the_message_in_progress():
    asm = MessageAssembler()
    asm.feed(BytesMessage(data=b"abc", message_finished=False), 3)
    assert asm.reset() == 3
    assert asm.size == 0
    assert asm.feed(BytesMessage(data=b"new"), 3) == b"new"


def test_a_flood_of_empty_fragments_does_not_grow_memory():
    asm = MessageAssembler()
    asm.feed(BytesMessage(data=b"x", message_finished=False), 1)
    empty = BytesMessage(data=b"", message_finished=False)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(10_000):
            assert asm.feed(empty, 0) is None
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1024  # a list of 10,000 parts would hold ~80 KB
    assert asm.size == 1
    whole = asm.feed(BytesMessage(data=b"y", message_finished=True), 1)
    assert whole == b"xy" and isinstance(whole, bytearray)  # no final copy
    assert asm.idle


def test_fragmented_text_with_multibyte_characters_is_rejoined():
    asm = MessageAssembler()
    assert asm.feed(TextMessage(data="é", message_finished=False), 2) is None
    assert asm.feed(TextMessage(data="✓!", message_finished=True), 4) == "é✓!"
