"""StreamableParser, lenient mode (`strict=False`): one test per kind of malformed output a model produces, each
checking the recovered messages, the repair records and that no content text is lost; equality with strict mode
on well-formed streams; and a property test: random damage never raises and never loses a letter of text."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gptoss.harmony as gh
from gptoss.harmony import HarmonyEncoding, RepairKind, StreamableParser
from gptoss.harmony import tokenizer as tok

from . import gen

K = RepairKind


def lenient(enc: HarmonyEncoding, tokens: list[int], role: str | None = "assistant") -> StreamableParser:
    parser = StreamableParser(enc, role, strict=False)
    for t in tokens:
        parser.process(t)
    return parser.process_eos()


def parse(
    enc: HarmonyEncoding, text: str, role: str | None = "assistant", tail: tuple[int, ...] = ()
) -> StreamableParser:
    return lenient(enc, [*enc.encode(text, allowed_special="all"), *tail], role)


def summary(parser: StreamableParser) -> list[tuple[str | None, str | None, str | None, str]]:
    out = []
    for m in parser.messages:
        (content,) = m.content
        assert isinstance(content, gh.TextContent)
        out.append((m.channel, m.recipient, m.content_type, content.text))
    return out


def kinds(parser: StreamableParser) -> list[RepairKind]:
    return [r.kind for r in parser.repairs]


CASES = [
    # header never reached <|message|> (openai-harmony #80), first and later message
    ("<|channel|>commentary Hello there<|end|>", [("commentary", None, None, "Hello there")], [K.MISSING_MESSAGE]),
    ("I must refuse<|end|><|start|>assistant<|channel|>analysis<|message|>x<|end|>",
     [(None, None, None, "I must refuse"), ("analysis", None, None, "x")], [K.MISSING_MESSAGE]),
    ("<|channel|>analysis<|message|>x<|end|><|start|>assistant<|channel|>final Hello  there<|end|>",
     [("analysis", None, None, "x"), ("final", None, None, "Hello  there")], [K.MISSING_MESSAGE]),
    # a new message began inside content: missing <|end|>, or missing <|end|><|start|>assistant
    ("<|channel|>analysis<|message|>think<|start|>assistant<|channel|>final<|message|>answer<|return|>",
     [("analysis", None, None, "think"), ("final", None, None, "answer")], [K.MISSING_END]),
    ("<|channel|>analysis<|message|>think<|channel|>final<|message|>answer<|return|>",
     [("analysis", None, None, "think"), ("final", None, None, "answer")], [K.MISSING_END]),
    # stray special tokens inside content and between messages
    ("<|channel|>final<|message|>a<|constrain|>b<|reserved_200014|>c<|message|>d<|end|>",
     [("final", None, None, "abcd")], [K.STRAY_SPECIAL] * 3),
    ("<|channel|>final<|message|>a<|end|><|end|><|endoftext|><|start|>assistant<|channel|>final<|message|>b",
     [("final", None, None, "a"), ("final", None, None, "b")], [K.STRAY_STOP, K.STRAY_SPECIAL]),
    # text after <|return|> without <|start|> (openai-harmony #60)
    ("<|channel|>final<|message|>done<|return|>commentary to=functions.x<|message|>{}<|call|>",
     [("final", None, None, "done"), ("commentary", "functions.x", None, "{}")], [K.MISSING_START, K.BAD_HEADER]),
    # garbage headers: extra words (openai-harmony #38), empty channel, `<|channel|>final <|constrain|>json`
    ("<|channel|>final extra words here<|message|>text<|end|>", [("final", None, None, "text")], [K.BAD_HEADER]),
    ("<|channel|><|message|>text<|end|>", [(None, None, None, "text")], [K.BAD_HEADER]),
    ("<|channel|>final <|constrain|>json<|message|>{}<|end|>",
     [("final", None, "<|constrain|>json", "{}")], [K.CONSTRAIN_RECIPIENT]),
    # a role-primed parser given a stream that repeats <|start|>assistant
    ("<|start|>assistant<|channel|>final<|message|>hi<|end|>", [("final", None, None, "hi")], [K.RESTARTED_HEADER]),
    # truncated inside a header
    ("<|channel|>analysis<|message|>x<|end|><|start|>assistant<|channel|>fin",
     [("analysis", None, None, "x"), ("fin", None, None, "")], [K.MISSING_MESSAGE]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected", "repairs"), CASES)
def test_recovers(enc: HarmonyEncoding, text: str, expected: list[tuple[str | None, ...]], repairs: list[str]) -> None:
    parser = parse(enc, text)
    assert summary(parser) == expected
    assert kinds(parser) == repairs


def test_garbage_header_words_are_kept_in_the_repair(enc: HarmonyEncoding) -> None:
    (repair,) = parse(enc, "<|channel|>final extra words here<|message|>text<|end|>").repairs
    assert repair.dropped == b"extra words here"
    assert 'Some("extra")' in repair.detail  # the strict error that triggered the salvage


@pytest.mark.parametrize(
    ("text", "role", "name"),
    [("<|start|>assistant:bob<|channel|>final<|message|>x<|end|>", gh.Role.ASSISTANT, "bob"),
     ("<|start|>foo<|message|>x<|end|>", gh.Role.ASSISTANT, None)],
)  # fmt: skip
def test_unknown_roles(enc: HarmonyEncoding, text: str, role: gh.Role, name: str | None) -> None:
    parser = parse(enc, text, role=None)
    assert [m.author for m in parser.messages] == [gh.Author(role, name)]
    assert summary(parser) == [("final" if name else None, None, None, "x")]
    assert kinds(parser) == [K.BAD_HEADER]


def test_unknown_token_ids_are_skipped_and_recorded(enc: HarmonyEncoding) -> None:
    parser = parse(enc, "<|channel|>final<|message|>ok", tail=(201089, -5, *enc.encode("!")))
    assert summary(parser) == [("final", None, None, "ok!")]
    assert [(r.kind, r.token_index) for r in parser.repairs] == [(K.UNKNOWN_TOKEN, 4), (K.UNKNOWN_TOKEN, 5)]
    assert "token id 201089 is outside the vocabulary" in parser.repairs[0].detail


def test_stream_cut_inside_a_character(enc: HarmonyEncoding) -> None:
    robot = enc.encode("🤖")
    assert len(robot) > 1
    parser = parse(enc, "<|channel|>final<|message|>emoji ", tail=tuple(robot[:-1]))
    assert summary(parser) == [("final", None, None, "emoji \ufffd")]
    (repair,) = parser.repairs
    assert repair.kind is K.INVALID_UTF8 and repair.dropped == enc.decode_bytes(robot[:-1])


def test_invalid_utf8_keeps_the_bytes_and_the_text_after(enc: HarmonyEncoding) -> None:
    parser = parse(enc, "<|channel|>final<|message|>bad", tail=(172, 253, 187, *enc.encode("tail")))
    assert summary(parser) == [("final", None, None, "bad\ufffd\ufffdtail")]
    assert [r.dropped for r in parser.repairs] == [b"\xf0\x9f", b"\xff"]


def test_deltas_add_up_to_the_content(enc: HarmonyEncoding) -> None:
    tokens = [*enc.encode("<|channel|>final<|message|>a", allowed_special="all"), 172, 253, 187, *enc.encode("b🤖c")]
    parser = StreamableParser(enc, "assistant", strict=False)
    deltas = [parser.process(t).last_content_delta or "" for t in tokens]
    assert "".join(deltas) == parser.current_content == "a\ufffd\ufffdb🤖c"


def test_plain_text_without_any_header(enc: HarmonyEncoding) -> None:
    parser = parse(enc, "hello<|end|>", role=None)
    assert summary(parser) == [(None, None, None, "hello")]
    assert K.MISSING_START in kinds(parser)


def well_formed_streams(enc: HarmonyEncoding) -> list[tuple[list[int], str | None]]:
    r = random.Random(77)
    keep = gh.RenderConversationConfig(auto_drop_analysis=False)
    rendered = [enc.render_conversation(gh.Conversation.from_dict(d), keep) for d in gen.conversations(78, 60)]
    model = [gen.model_stream(r, enc.tokenizer.encode_ordinary) for _ in range(200)]
    return [(t, None) for t in rendered] + [(t, "assistant") for t in model]


def test_lenient_equals_strict_on_well_formed_streams(enc: HarmonyEncoding) -> None:
    """The only difference allowed: `<|constrain|>x` read as a recipient moves to the content type."""
    checked = 0
    for tokens, role in well_formed_streams(enc):
        strict = StreamableParser(enc, role)
        try:
            for t in tokens:
                strict.process(t)
            strict.process_eos()
        except gh.HarmonyError:
            continue  # e.g. `assistant:bob`, which openai-harmony cannot read back either
        loose = lenient(enc, tokens, role)
        expected = [m.to_dict() for m in strict.messages]
        for m in expected:
            if str(m.get("recipient", "")).startswith("<|constrain|>") and "content_type" not in m:
                m["content_type"] = m.pop("recipient")
        assert [m.to_dict() for m in loose.messages] == expected
        assert set(kinds(loose)) <= {K.CONSTRAIN_RECIPIENT}
        checked += 1
    assert checked > 200


# ---- property: random structural damage never raises and never loses a content word ----

MARKERS = [f"w{i}x" for i in range(40)]
DAMAGE = [tok.START, tok.END, tok.MESSAGE, tok.CHANNEL, tok.CONSTRAIN, tok.RETURN, tok.CALL, 200014, 199999]


def marked_stream(enc: HarmonyEncoding, contents: list[list[str]], headers: list[int]) -> list[int]:
    """Well-formed messages whose content words are unique markers, in the model's header forms."""
    out: list[int] = []
    forms = ["<|channel|>analysis", "<|channel|>commentary to=functions.f <|constrain|>json", "<|channel|>final"]
    for i, (words, form) in enumerate(zip(contents, headers, strict=True)):
        start = "<|start|>assistant" if i else ""
        out += enc.encode(f"{start}{forms[form]}<|message|>{' '.join(words)} <|end|>", allowed_special="all")
    return out


@st.composite
def damaged(draw: st.DrawFn) -> tuple[list[list[str]], list[int], list[tuple[int, float, int]]]:
    n = draw(st.integers(1, 4))
    words = draw(st.permutations(MARKERS))
    contents = [words[i * 5 : i * 5 + draw(st.integers(1, 5))] for i in range(n)]
    headers = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    ops = draw(st.lists(st.tuples(st.integers(0, 4), st.floats(0, 1), st.integers(0, 10**6)), max_size=6))
    return contents, headers, ops


def apply_damage(tokens: list[int], ops: list[tuple[int, float, int]]) -> list[int]:
    """Only special tokens are removed; ordinary tokens are inserted (byte fragments, unknown ids) never dropped."""
    out = list(tokens)
    for op, where, pick in ops:
        i = int(where * len(out))
        if op == 0:
            out.insert(i, DAMAGE[pick % len(DAMAGE)])
        elif op == 1:
            specials = [j for j, t in enumerate(out) if tok.is_special(t)]
            if specials:
                del out[specials[pick % len(specials)]]
        elif op == 2:
            out.insert(i, [172, 253, 187, 9552][pick % 4])
        elif op == 3:
            out.insert(i, [201089, 250000, -1][pick % 3])
        else:
            out = out[: max(i, 1)]
    return out


def text_pool(parser: StreamableParser) -> str:
    """Everything the parser kept: header fields (role and `to=` written back), contents, repairs' dropped bytes."""
    fields = []
    for m in parser.messages:
        recipient = None if m.recipient is None else "to=" + m.recipient
        parts = [m.author.role.value, m.author.name, m.channel, recipient, m.content_type]
        fields += [p for p in parts if p] + [c.text for c in m.content if isinstance(c, gh.TextContent)]
    return " ".join(fields + [r.dropped.decode("utf-8", "replace") for r in parser.repairs])


def letters(text: str) -> Counter[str]:
    return Counter(c for c in text if c.isascii() and c.isalnum())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damaged(), st.sampled_from(["assistant", None]))
def test_random_damage_never_raises_or_loses_words(
    enc: HarmonyEncoding, case: tuple[list[list[str]], list[int], list[tuple[int, float, int]]], role: str | None
) -> None:
    contents, headers, ops = case
    tokens = marked_stream(enc, contents, headers)
    if role is None:
        tokens = enc.encode("<|start|>assistant", allowed_special="all") + tokens
    broken = apply_damage(tokens, ops)
    parser = lenient(enc, broken, role)
    # a special token inserted mid-word splits the word between two messages, so count letters, not words
    surviving = enc.decode([t for t in broken if tok.in_vocab(t) and not tok.is_special(t)])
    lost = letters(surviving) - letters(text_pool(parser))
    assert not lost, f"lost {dict(lost)} from {enc.decode([t for t in broken if tok.in_vocab(t)])!r}"
