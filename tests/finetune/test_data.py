"""Training data: chat and harmony JSONL lines -> training render + loss mask, and every bad-line message."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptoss.finetune.data import DataError, encode_line, load_jsonl, message_spans, parse_conversation
from gptoss.harmony import Conversation, Message, Role, SystemContent, load_harmony_encoding
from gptoss.harmony.tokenizer import RETURN
from gptoss.server.conversation import NO_AUTO_DROP

ENC = load_harmony_encoding("HarmonyGptOss")
words = st.text(alphabet="abcdefgh xyz.?", min_size=1, max_size=12)


@st.composite
def assistant_turn(draw: st.DrawFn, n: int) -> list[dict[str, Any]]:
    turn: list[dict[str, Any]] = []
    for j in range(draw(st.integers(0, 2))):  # tool calls, each answered
        call = {"id": f"c{n}_{j}", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}
        turn.append({"role": "assistant", "tool_calls": [call], "thinking": draw(st.none() | words)})
        turn.append({"role": "tool", "tool_call_id": f"c{n}_{j}", "content": draw(words)})
    turn.append({"role": "assistant", "content": draw(words), "reasoning_content": draw(st.none() | words)})
    return turn


@st.composite
def chat(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": draw(st.sampled_from(["system", "developer"])), "content": draw(words)})
    for n in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(words)})
        messages += draw(assistant_turn(n))
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    return {"messages": messages, "tools": tools}


def span_role(tokens: list[int]) -> str:
    return ENC.decode(tokens[1:3]).split("<|")[0].split(" ")[0]  # "assistant", "user", "functions.lookup", ...


@settings(max_examples=40, deadline=None)
@given(chat())
def test_mask_covers_exactly_the_assistant_tokens(line: dict[str, Any]) -> None:
    tokens, mask = encode_line(json.dumps(line), ENC, 100_000)
    assert tokens == ENC.render_conversation_for_training(parse_conversation(line), NO_AUTO_DROP)
    opener = 1 + len(ENC.encode("assistant"))
    previous = ""
    for start, end in message_spans(tokens):
        role = span_role(tokens[start:end])
        if role.startswith("assistant"):
            want = [0] * (0 if previous.startswith("assistant") else opener) + [1] * (end - start)
            assert mask[start:end] == want[: end - start]
        else:
            assert mask[start:end] == [0] * (end - start)
        previous = role
    assert tokens[-1] == RETURN and mask[-1] == 1  # the final answer ends in <|return|>, trained


def test_completed_reasoning_is_dropped_and_the_last_kept() -> None:
    line = {
        "messages": [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "first", "thinking": "OLD THOUGHT"},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "second", "thinking": "NEW THOUGHT"},
        ]
    }
    tokens, mask = encode_line(json.dumps(line), ENC, 10_000)
    text = ENC.decode(tokens)
    assert "OLD THOUGHT" not in text and "NEW THOUGHT" in text
    trained = ENC.decode([t for t, m in zip(tokens, mask, strict=True) if m])
    assert trained == (
        "<|channel|>final<|message|>first<|end|><|channel|>analysis<|message|>NEW THOUGHT<|end|>"
        "<|start|>assistant<|channel|>final<|message|>second<|return|>"
    )


def test_harmony_json_lines_are_read() -> None:
    conversation = Conversation.from_messages(
        [
            Message.from_role_and_content(Role.SYSTEM, SystemContent.new()),
            Message.from_role_and_content(Role.USER, "hi"),
            Message.from_role_and_content(Role.ASSISTANT, "hello").with_channel("final"),
        ]
    )
    tokens, mask = encode_line(conversation.to_json(), ENC, 10_000)
    assert tokens == ENC.render_conversation_for_training(conversation)
    trained = ENC.decode([t for t, m in zip(tokens, mask, strict=True) if m])
    assert trained == "<|channel|>final<|message|>hello<|return|>"


def test_weight_0_keeps_an_assistant_message_as_context_only() -> None:
    line: dict[str, Any] = {
        "messages": [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "first", "weight": 0},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "second", "thinking": "THOUGHT", "weight": 1},
        ]
    }
    tokens, mask = encode_line(json.dumps(line), ENC, 10_000)
    unweighted = {"messages": [{k: v for k, v in m.items() if k != "weight"} for m in line["messages"]]}
    plain_tokens, plain_mask = encode_line(json.dumps(unweighted), ENC, 10_000)
    assert tokens == plain_tokens and "first" in ENC.decode(tokens)  # the same render: only the mask differs
    trained = ENC.decode([t for t, m in zip(tokens, mask, strict=True) if m])
    assert trained == (
        "<|channel|>analysis<|message|>THOUGHT<|end|><|start|>assistant<|channel|>final<|message|>second<|return|>"
    )
    first = ENC.decode([t for t, m in zip(tokens, plain_mask, strict=True) if m])
    assert first.startswith("<|channel|>final<|message|>first")


def test_weight_0_on_a_harmony_message() -> None:
    said = [("user", "hi", None), ("assistant", "hello", 0), ("user", "again", None), ("assistant", "yes", None)]
    messages = [Message.from_role_and_content(Role(r), t) for r, t, _ in said]
    conversation = Conversation.from_messages(
        [m.with_channel("final") if m.author.role is Role.ASSISTANT else m for m in messages]
    )
    data = conversation.to_dict()
    data["messages"][1]["weight"] = 0
    tokens, mask = encode_line(json.dumps(data), ENC, 10_000)
    assert tokens == ENC.render_conversation_for_training(conversation, NO_AUTO_DROP)
    assert ENC.decode([t for t, m in zip(tokens, mask, strict=True) if m]) == "<|channel|>final<|message|>yes<|return|>"


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"messages": [', "not valid JSON"),
        ('{"msgs": []}', 'expected an object with a non-empty "messages" list'),
        ('{"messages": [{"role": "wizard", "content": "x"}]}', "unknown role 'wizard'"),
        ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant message to train on"),
        ('{"messages": [{"role": "tool", "content": "x"}]}', "a tool message needs a string 'tool_call_id'"),
        ('{"messages": [{"role": "user", "content": 5}]}', "content must be a string or a list"),
        ('{"messages": [{"role": "assistant"}]}', "an assistant message needs content, thinking or tool_calls"),
        (
            '{"messages": [{"role": "tool", "tool_call_id": "z", "content": "x"}]}',
            "no function call with call_id 'z' precedes its output",
        ),
        (json.dumps({"messages": [{"role": "user", "content": "x " * 300}, {"role": "assistant", "content": "y"}]}),
         "longer than the limit of 200 (--max-length)"),
        ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 0.5}]}',
         "messages[1].weight must be 0 or 1, got 0.5"),
        ('{"messages": [{"role": "user", "content": "x", "weight": 0}, {"role": "assistant", "content": "y"}]}',
         "messages[0].weight: only assistant messages are trained"),
        ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 0}]}',
         "no assistant message to train on"),
    ],
)  # fmt: skip
def test_bad_lines_are_reported_with_their_line_number(tmp_path: Path, line: str, reason: str) -> None:
    path = write(tmp_path, [GOOD, "", line, GOOD])
    data = load_jsonl(path, ENC, 200)
    assert [e.line for e in data.examples] == [1, 4]
    assert len(data.problems) == 1 and data.problems[0].startswith(f"{path}:3: ") and reason in data.problems[0]
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}:3: .*{re.escape(reason[:20])}"):
        load_jsonl(path, ENC, 200, strict=True)


def test_a_file_with_no_usable_line_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no usable conversations \(1 bad line\(s\); first: .*:1: not valid JSON"):
        load_jsonl(write(tmp_path, ["nope"]), ENC, 100)
    with pytest.raises(DataError, match="cannot read training data"):
        load_jsonl(tmp_path / "missing.jsonl", ENC, 100)
