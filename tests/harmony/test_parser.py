"""StreamableParser, strict mode: equal to openai-harmony's after every token (state, role, channel, recipient,
content type, last delta, current content, state_data; the message list after every stop token and at the end),
on well-formed and damaged streams, errors included. Lenient mode is in test_parser_lenient.py."""

from __future__ import annotations

import json
import random
from types import ModuleType
from typing import Any

import pytest

import gptoss.harmony as gh
from gptoss.harmony import HarmonyEncoding, HarmonyError, StreamableParser, StreamState
from gptoss.harmony import tokenizer as tok

from . import gen

STOPS = {200002, 200007, 200012}


def value(x: Any) -> Any:
    return getattr(x, "value", x)


def view(p: Any) -> tuple[Any, ...]:
    return (
        value(p.state),
        value(p.current_role),
        p.current_channel,
        p.current_recipient,
        p.current_content_type,
        p.last_content_delta,
        p.current_content,
        p.state_data,
    )


def messages(p: Any) -> list[str]:
    return [json.dumps(m.to_dict()) for m in p.messages]


def trace(parser: Any, tokens: list[int]) -> list[Any]:
    """Per-token views; messages after stop tokens (the only tokens that can complete one) and at the end."""
    out: list[Any] = []
    try:
        for t in tokens:
            parser.process(t)
            out.append(view(parser))
            if t in STOPS:
                out.append(messages(parser))
        parser.process_eos()
        out += [view(parser), messages(parser), list(parser.tokens)]
    except Exception as e:
        out.append(("error", type(e).__name__ == "HarmonyError", str(e)))
    return out


def assert_same(oh: ModuleType, oh_enc: Any, enc: HarmonyEncoding, tokens: list[int], role: str | None) -> None:
    expected = trace(oh.StreamableParser(oh_enc, None if role is None else oh.Role(role)), tokens)
    actual = trace(StreamableParser(enc, role), tokens)
    if actual != expected:
        k = next((i for i, (a, b) in enumerate(zip(actual, expected, strict=False)) if a != b), None)
        raise AssertionError(f"role={role} tokens={tokens}\nfirst difference at {k}:\n ours {actual[k:k + 1]}\n "
                             f"theirs {expected[k:k + 1]}")  # fmt: skip


@pytest.mark.parametrize("seed", range(3))
def test_rendered_conversations(enc: HarmonyEncoding, oh: ModuleType, oh_enc: Any, seed: int) -> None:
    keep = gh.RenderConversationConfig(auto_drop_analysis=False)
    for data in gen.conversations(seed=2000 + seed, count=40):
        tokens = enc.render_conversation(gh.Conversation.from_dict(data), keep)
        assert_same(oh, oh_enc, enc, tokens, None)


@pytest.mark.parametrize("seed", range(3))
def test_model_streams(enc: HarmonyEncoding, oh: ModuleType, oh_enc: Any, seed: int) -> None:
    r = random.Random(3000 + seed)
    for _ in range(120):
        assert_same(oh, oh_enc, enc, gen.model_stream(r, enc.tokenizer.encode_ordinary), "assistant")


@pytest.mark.parametrize("seed", range(4))
def test_damaged_streams_fail_the_same_way(enc: HarmonyEncoding, oh: ModuleType, oh_enc: Any, seed: int) -> None:
    r = random.Random(4000 + seed)
    convs = [gh.Conversation.from_dict(d) for d in gen.conversations(seed=5000 + seed, count=20)]
    for i in range(120):
        if i % 6 == 0:
            # drop the system/developer prompt: short streams keep the oracle's per-token cost down
            talk = [m for m in convs[i // 6].messages if m.author.role not in (gh.Role.SYSTEM, gh.Role.DEVELOPER)]
            base, role = [t for m in talk for t in enc.render(m)], None
        else:
            base, role = gen.model_stream(r, enc.tokenizer.encode_ordinary), "assistant"
        assert_same(oh, oh_enc, enc, gen.mutate(r, base), role)


def feed(enc: HarmonyEncoding, text: str, role: str | None = "assistant") -> StreamableParser:
    parser = StreamableParser(enc, role)
    for t in enc.encode(text, allowed_special="all"):
        parser.process(t)
    return parser.process_eos()


@pytest.mark.parametrize(
    ("header", "channel", "recipient", "content_type"),
    [
        ("<|channel|>analysis", "analysis", None, None),
        ("<|channel|>commentary to=functions.f <|constrain|>json", "commentary", "functions.f", "<|constrain|>json"),
        ("<|channel|>commentary to=functions.f<|constrain|>json", "commentary", "functions.f", "<|constrain|>json"),
        ("<|channel|>analysis python code", "analysis", "python", "code"),
        ("<|channel|>commentary json", "commentary", "json", None),
        ("<|channel|>final <|constrain|>json", "final", "<|constrain|>json", None),
        ("<|start|>assistant<|channel|>final", "final", "<|start|>assistant", None),
    ],
)
def test_header_outcomes(
    enc: HarmonyEncoding, header: str, channel: str, recipient: str | None, content_type: str | None
) -> None:
    (message,) = feed(enc, f"{header}<|message|>hi<|end|>").messages
    assert (message.channel, message.recipient, message.content_type) == (channel, recipient, content_type)


def test_tool_author_from_header(enc: HarmonyEncoding) -> None:
    (message,) = feed(
        enc, "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{}", None
    ).messages
    assert message.author == gh.Author(gh.Role.TOOL, "functions.get_weather") and message.recipient == "assistant"


@pytest.mark.parametrize(
    ("text", "role", "error"),
    [
        ("<|channel|>commentary<|constrain|>json to=functions.f<|message|>x", "assistant",
         'unexpected tokens remaining in message header: Some("<|constrain|>json")'),
        ("<|channel|>final extra words here<|message|>x", "assistant",
         'unexpected tokens remaining in message header: Some("extra")'),
        ("<|channel|><|message|>x", "assistant", "channel marker present but no channel value found in header"),
        ("<|start|>foo<|message|>x", None, "Unknown role: foo"),
        ("<|start|>assistant:bob<|channel|>final<|message|>x", None, "Unknown role: assistant:bob"),
        ("<|start|><|message|>x", None, "message header did not contain a role"),
        ("<|channel|>commentary Hello<|end|>", "assistant",
         "Unexpected EOS while waiting for message header to complete"),
        ("hi", None, "Unexpected token 3686 while expecting start token 200006"),
    ],
)  # fmt: skip
def test_strict_errors(
    enc: HarmonyEncoding, oh: ModuleType, oh_enc: Any, text: str, role: str | None, error: str
) -> None:
    with pytest.raises(HarmonyError) as info:
        feed(enc, text, role)
    assert str(info.value) == error
    assert_same(oh, oh_enc, enc, enc.encode(text, allowed_special="all"), role)


def test_remaining_words_use_rust_debug_escapes(enc: HarmonyEncoding, oh: ModuleType, oh_enc: Any) -> None:
    text = '<|channel|>final a"b\xa0c\\ to=r t<|message|>x'
    with pytest.raises(HarmonyError) as info:
        feed(enc, text)
    assert str(info.value) == 'unexpected tokens remaining in message header: Some("a\\"b\\u{a0}c\\\\")'
    assert_same(oh, oh_enc, enc, enc.encode(text, allowed_special="all"), "assistant")


def test_header_that_is_not_utf8(enc: HarmonyEncoding, oh: ModuleType, oh_enc: Any) -> None:
    tokens = [tok.CHANNEL, 172, tok.MESSAGE, *enc.encode("x")]
    with pytest.raises(HarmonyError, match="^could not decode header$"):
        StreamableParser(enc, "assistant").process(tok.CHANNEL).process(172).process(tok.MESSAGE)
    assert_same(oh, oh_enc, enc, tokens, "assistant")


def test_tokens_after_return_need_a_start_in_strict_mode(enc: HarmonyEncoding) -> None:
    with pytest.raises(HarmonyError, match="Unexpected token 12606 while expecting start token 200006"):
        feed(enc, "<|channel|>final<|message|>done<|return|>commentary")


def test_out_of_vocabulary_token_is_an_error(enc: HarmonyEncoding) -> None:
    """Deliberately stricter than openai-harmony, which turns the rest of the message into one U+FFFD."""
    parser = StreamableParser(enc, "assistant")
    for t in enc.encode("<|channel|>final<|message|>ok", allowed_special="all"):
        parser.process(t)
    with pytest.raises(HarmonyError, match=r"token id 201089 is outside the o200k_harmony vocabulary \(0\.\.201088\)"):
        parser.process(201089)
    with pytest.raises(HarmonyError, match="token id -1 is outside"):
        StreamableParser(enc, None).process(-1)


def test_split_utf8_deltas(enc: HarmonyEncoding, oh: ModuleType, oh_enc: Any) -> None:
    """The reference's byte-split case: a bad sequence becomes U+FFFD and `worked` never shows up as a delta."""
    tokens = [*enc.encode("<|channel|>final<|message|>", allowed_special="all"), 9552, 9552, 135596, tok.END]
    parser = StreamableParser(enc, "assistant")
    for t in tokens[:-4]:
        parser.process(t)
    deltas = [parser.process(t).last_content_delta for t in tokens[-4:]]
    assert deltas == [" ", "\ufffd", " \ufffd", None]
    assert parser.messages[0].content[0] == gh.TextContent(" \ufffd \ufffdworked")
    assert_same(oh, oh_enc, enc, tokens, "assistant")


def test_special_tokens_inside_content_are_text(enc: HarmonyEncoding) -> None:
    (message,) = feed(enc, "<|channel|>final<|message|>a<|start|>b<|channel|>c<|end|>").messages
    assert message.content == [gh.TextContent("a<|start|>b<|channel|>c")]


def test_parse_messages_from_completion_tokens(enc: HarmonyEncoding) -> None:
    text = "<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>final<|message|>Hi!"
    tokens = enc.encode(text, allowed_special="all")
    for stream in (tokens, [*tokens, tok.RETURN]):  # with or without the stop token
        parsed = enc.parse_messages_from_completion_tokens(stream, gh.Role.ASSISTANT)
        assert [(m.channel, m.content[0]) for m in parsed] == [
            ("analysis", gh.TextContent("think")),
            ("final", gh.TextContent("Hi!")),
        ]


def test_state_after_stop_and_initial(enc: HarmonyEncoding) -> None:
    parser = StreamableParser(enc, None)
    assert parser.state is StreamState.EXPECT_START and parser.current_role is None
    assert StreamableParser(enc, "assistant").current_role is gh.Role.ASSISTANT
    assert StreamableParser(enc, "assistant").state_data == {"state": "Header", "header_tokens": []}
