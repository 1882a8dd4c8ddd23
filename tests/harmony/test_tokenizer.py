"""o200k_harmony: the special-token table, ids the reference lists, equality with openai-harmony's tokenizer, and
the incremental detokenizer on characters split across tokens."""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptoss.harmony import HarmonyEncoding, HarmonyError, IncrementalDetokenizer
from gptoss.harmony import tokenizer as tok

REFERENCE_TABLE = {
    "<|startoftext|>": 199998,
    "<|endoftext|>": 199999,
    "<|reserved_200000|>": 200000,
    "<|reserved_200001|>": 200001,
    "<|return|>": 200002,
    "<|constrain|>": 200003,
    "<|reserved_200004|>": 200004,
    "<|channel|>": 200005,
    "<|start|>": 200006,
    "<|end|>": 200007,
    "<|message|>": 200008,
    "<|reserved_200009|>": 200009,
    "<|reserved_200010|>": 200010,
    "<|reserved_200011|>": 200011,
    "<|call|>": 200012,
    "<|reserved_200013|>": 200013,
}
SAMPLES = [
    "hello world",
    "<|start|>user<|message|>hi<|end|>",
    "naïve café — 数据 🤖👩‍💻 \r\n\t  x",
    "It's we'LL they'Re 1234567 3.14159",
    "   leading and trailing   \n\n\n",
    "x<|end|>y <|endofprompt|> <|reserved_200018|>",
]


def test_special_token_table(enc: HarmonyEncoding) -> None:
    table = tok.special_tokens()
    assert len(table) == 1091 and max(table.values()) == 201088
    assert {k: v for k, v in table.items() if v <= 200013} == REFERENCE_TABLE
    assert table["<|reserved_200014|>"] == 200014 and table["<|reserved_201088|>"] == 201088
    assert "<|endofprompt|>" not in table  # tiktoken's own o200k_harmony has it at 200018; harmony does not
    assert enc.tokenizer.n_vocab == 201089


def test_special_tokens_match_openai_harmony(enc: HarmonyEncoding, oh_enc: Any) -> None:
    assert enc.special_tokens_set == oh_enc.special_tokens_set
    assert [enc.is_special_token(t) for t in (5, 199998, 201088, 201089)] == [False, True, True, False]
    assert sorted(enc.stop_tokens()) == sorted(oh_enc.stop_tokens()) == [200002, 200007, 200012]
    assert sorted(enc.stop_tokens_for_assistant_actions()) == sorted(oh_enc.stop_tokens_for_assistant_actions())


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("assistant", [173781]),
        ("user", [1428]),
        ("system", [17360]),
        ("developer", [77944]),
        ("analysis", [35644]),
        ("final", [17196]),
        ("commentary", [12606, 815]),
        (" to", [316]),
        ("functions", [44580]),
        (" json", [5701]),
        ("hello world", [24912, 2375]),
        ("<|start|>", [27, 91, 5236, 91, 29]),
    ],
)
def test_reference_ids(enc: HarmonyEncoding, text: str, ids: list[int]) -> None:
    assert enc.tokenizer.encode_ordinary(text) == ids


@pytest.mark.parametrize("text", SAMPLES)
def test_encode_matches_openai_harmony(enc: HarmonyEncoding, oh_enc: Any, text: str) -> None:
    assert enc.encode(text, disallowed_special=()) == oh_enc.encode(text, disallowed_special=())
    assert enc.encode(text, allowed_special="all") == oh_enc.encode(text, allowed_special="all")
    ids = enc.encode(text, allowed_special="all")
    assert enc.decode_utf8(ids) == oh_enc.decode_utf8(ids) == text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_encode_matches_openai_harmony_on_any_text(text: str) -> None:
    enc, oh_enc = _encodings()
    assert enc.encode(text, disallowed_special=()) == oh_enc.encode(text, disallowed_special=())


@functools.cache
def _encodings() -> tuple[HarmonyEncoding, Any]:
    """Hypothesis tests cannot take function-scoped fixtures; load both encodings once (openai-harmony's load
    reads the vocabulary file again on every call)."""
    import openai_harmony

    from gptoss.harmony import load_harmony_encoding

    name = "HarmonyGptOss"
    return load_harmony_encoding(name), openai_harmony.load_harmony_encoding(name)


def test_disallowed_special_text(enc: HarmonyEncoding, oh_enc: Any, oh: ModuleType) -> None:
    with pytest.raises(HarmonyError) as ours:
        enc.encode("a<|end|>")
    with pytest.raises(oh.HarmonyError) as theirs:
        oh_enc.encode("a<|end|>")
    assert str(ours.value) == str(theirs.value)
    assert "Encountered text corresponding to disallowed special token '<|end|>'" in str(ours.value)


@pytest.mark.parametrize("tokens", [[201089], [9552], [24912, 172]])
def test_decode_utf8_errors_match(enc: HarmonyEncoding, oh_enc: Any, oh: ModuleType, tokens: list[int]) -> None:
    with pytest.raises(HarmonyError) as ours:
        enc.decode_utf8(tokens)
    with pytest.raises(oh.HarmonyError) as theirs:
        oh_enc.decode_utf8(tokens)
    assert str(ours.value) == str(theirs.value)


def test_decode(enc: HarmonyEncoding) -> None:
    assert enc.decode([200014, 201088, 200018]) == "<|reserved_200014|><|reserved_201088|><|reserved_200018|>"
    assert enc.decode([9552]) == " \ufffd"
    with pytest.raises(HarmonyError, match="Invalid token for decoding: 201089"):
        enc.decode([201089])


def test_token_bytes_rejects_ids_outside_the_vocabulary(enc: HarmonyEncoding) -> None:
    for bad in (-1, 201089):
        with pytest.raises(HarmonyError, match=f"token id {bad} is outside the o200k_harmony vocabulary"):
            tok.token_bytes(enc.tokenizer, bad)


# ---- incremental detokenizer ----


def split_character_tokens(enc: HarmonyEncoding) -> list[int]:
    """Tokens that each hold only part of a character: the 4 UTF-8 bytes of 🤖 and of 👩, one byte per token."""
    by_byte = {bytes([b]): enc.tokenizer.encode_single_token(bytes([b])) for b in "🤖👩".encode()}
    return [by_byte[bytes([b])] for b in "🤖👩".encode()]


def test_detokenizer_holds_partial_characters(enc: HarmonyEncoding) -> None:
    detok = IncrementalDetokenizer(enc.tokenizer)
    out = [detok.push(t) for t in split_character_tokens(enc)]
    assert out == ["", "", "", "🤖", "", "", "", "👩"]
    assert not detok.pending and detok.flush() == ""


@pytest.mark.parametrize("text", ["emoji 🤖 and 👩‍💻 family 👨‍👩‍👧", "数据科学 naïve", "a\u0301 \U0001f600" * 3])
def test_detokenizer_never_emits_half_a_character(enc: HarmonyEncoding, text: str) -> None:
    tokens = enc.encode(text)
    detok = IncrementalDetokenizer(enc.tokenizer)
    pieces = [detok.push(t) for t in tokens]
    assert "".join(pieces) + detok.flush() == text
    assert all("\ufffd" not in p for p in pieces)


def test_detokenizer_truncated_character_becomes_replacement(enc: HarmonyEncoding) -> None:
    detok = IncrementalDetokenizer(enc.tokenizer)
    assert detok.push_many(split_character_tokens(enc)[:2]) == ""
    assert detok.pending and detok.flush() == "\ufffd"


def test_detokenizer_invalid_bytes_and_specials(enc: HarmonyEncoding) -> None:
    detok = IncrementalDetokenizer(enc.tokenizer)
    assert detok.push_many([187, *enc.encode("ok"), tok.END]) == "\ufffdok<|end|>"
    with pytest.raises(HarmonyError, match="token id 201089 is outside"):
        detok.push(201089)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_detokenizer_roundtrip_byte_by_byte(text: str) -> None:
    """Feed every UTF-8 byte as its own token (the worst split there is): text comes back whole."""
    enc, _ = _encodings()
    tokens = [enc.tokenizer.encode_single_token(bytes([b])) for b in text.encode()]
    detok = IncrementalDetokenizer(enc.tokenizer)
    pieces = [detok.push(t) for t in tokens]
    assert "".join(pieces) == text and detok.flush() == ""
