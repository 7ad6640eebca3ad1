"""Streaming detokenizer: never half a UTF-8 character, O(1) per token."""

from slmkit.text import IncrementalDetokenizer, detokenize_all


def byte_token(token_id: int) -> bytes:
    return bytes([token_id])


TEXT = "héllo 世界 🙂👍🏽"


def test_single_byte_tokens_never_emit_half_a_character():
    detokenizer = IncrementalDetokenizer(lambda i: bytes([i]))
    pieces = [detokenizer.add(b) for b in TEXT.encode("utf-8")]
    pieces.append(detokenizer.flush())
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == TEXT
    # Multi-byte characters appear whole, on the token carrying their last byte.
    assert "世" in pieces and "🙂" in pieces


def test_multi_byte_pieces_keep_spacing():
    vocab = {0: b" Hello", 1: b" world", 2: b"!", 3: " 🙂".encode()[:3], 4: " 🙂".encode()[3:]}
    detokenizer = IncrementalDetokenizer(vocab.__getitem__)
    pieces = [detokenizer.add(i) for i in range(5)]
    assert pieces == [" Hello", " world", "!", " ", "🙂"]
    assert detokenizer.flush() == ""


def test_flush_turns_a_truncated_emoji_into_replacement_character():
    detokenizer = IncrementalDetokenizer(byte_token)
    emoji = "a🙂".encode("utf-8")[:-1]
    emitted = "".join(detokenizer.add(b) for b in emoji)
    assert emitted == "a"
    assert detokenizer.flush() == "\ufffd"


def test_invalid_bytes_become_replacement_characters_without_stalling():
    detokenizer = IncrementalDetokenizer(byte_token)
    assert detokenizer.add(0xFF) == "\ufffd"
    assert detokenizer.add(ord("a")) == "a"


def test_detokenizer_is_reusable_after_flush():
    detokenizer = IncrementalDetokenizer(byte_token)
    detokenizer.add(0xF0)
    assert detokenizer.flush() == "\ufffd"
    assert detokenizer.add(ord("x")) == "x"


def test_detokenize_all():
    assert detokenize_all(byte_token, TEXT.encode("utf-8")) == TEXT
    assert detokenize_all(byte_token, "🙂".encode("utf-8")[:2]) == "\ufffd"
