"""The conversion layer alone: prompt rules, turn rules, checks, and the incremental output parser."""

from __future__ import annotations

import random

import pytest

from gptoss.engine import TokenEvent
from gptoss.harmony import HarmonyEncoding, ReasoningEffort, RepairKind
from gptoss.server import conversation as conv
from gptoss.server.conversation import (
    ConversionError,
    FunctionCall,
    FunctionOutput,
    FunctionTool,
    ItemDone,
    ItemKind,
    ItemStarted,
    OutputParser,
    PromptSpec,
    Reasoning,
    Text,
    TextDelta,
    ToolChoice,
)
from tests.server.conftest import tokens

WEATHER = FunctionTool("get_weather", "Weather.", {"type": "object", "properties": {"city": {"type": "string"}}})


def render(encoding: HarmonyEncoding, **fields: object) -> str:
    spec = PromptSpec(**{"items": (Text("user", "hi"),), **fields})  # type: ignore[arg-type]
    return encoding.decode(conv.render_prompt(spec, encoding).tokens)


def test_minimal_prompt_is_system_then_user(encoding: HarmonyEncoding) -> None:
    text = render(encoding, effort=ReasoningEffort.HIGH, date="2025-06-28")
    assert text == (
        "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
        "Knowledge cutoff: 2024-06\nCurrent date: 2025-06-28\n\nReasoning: high\n\n"
        "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
        "<|start|>user<|message|>hi<|end|><|start|>assistant"
    )


def test_instructions_gather_in_order_into_the_developer_message(encoding: HarmonyEncoding) -> None:
    items = (Text("system", "One."), Text("user", "hi"), Text("developer", "Two."))
    text = render(encoding, items=items, instructions="Zero.")
    assert (
        "<|start|>developer<|message|># Instructions\n\nZero.\n\nOne.\n\nTwo.<|end|><|start|>user<|message|>hi" in text
    )


def test_tools_and_tool_choice_none(encoding: HarmonyEncoding) -> None:
    assert "type get_weather = (_: {\ncity?: string,\n}) => any;" in render(encoding, tools=(WEATHER,))
    assert "get_weather" not in render(encoding, tools=(WEATHER,), tool_choice=ToolChoice("none"))


def test_structure_goes_to_turn_rules_not_into_the_prompt(encoding: HarmonyEncoding) -> None:
    spec = PromptSpec(items=(Text("user", "hi"),), tools=(WEATHER,), tool_choice=ToolChoice("function", "get_weather"))
    prompt = conv.render_prompt(spec, encoding)
    assert encoding.decode(prompt.tokens).endswith("<|start|>user<|message|>hi<|end|><|start|>assistant")
    rules = prompt.rules
    assert rules.constrained and [c.recipient for c in rules.callable] == ["functions.get_weather"]
    assert rules.choice == "function" and not rules.final_allowed
    free = conv.render_prompt(PromptSpec(items=()), encoding).rules
    assert not free.constrained  # no tools, no format: nothing to enforce
    fmt = conv.ResponseFormat("r", {"type": "object"}, strict=True)
    rules = conv.render_prompt(PromptSpec(items=(), tools=(WEATHER,), response_format=fmt), encoding).rules
    assert rules.final_schema == {"type": "object"} and rules.final_strict and rules.final_allowed


@pytest.mark.parametrize(
    ("fields", "message", "param"),
    [
        ({"tools": (FunctionTool("a b"),)}, "invalid function name 'a b'", "tools[0].name"),
        ({"tools": (FunctionTool("x" * 65),)}, "use 1-64 letters, digits", "tools[0].name"),
        ({"tools": (FunctionTool("f<|end|>"),)}, "invalid function name", "tools[0].name"),
        ({"tools": (WEATHER, WEATHER)}, "duplicate function name 'get_weather'", "tools[1].name"),
        ({"tool_choice": ToolChoice("required")}, "tool_choice 'required' needs at least one function", "tool_choice"),
        ({"tools": (WEATHER,), "tool_choice": ToolChoice("function", "x")}, "names function 'x'", "tool_choice"),
        ({"tools": (FunctionTool("f", "", {"type": "strng"}),)}, "unknown type 'strng'", "tools[0].parameters"),
        (
            {"tools": (FunctionTool("f", "", {"required": "x"}),)},
            "must be a list of property names",
            "tools[0].parameters",
        ),
        ({"response_format": conv.ResponseFormat("r", {"type": 5})}, "invalid JSON Schema", "response_format"),
        ({"items": (FunctionOutput("c9", "out"),)}, "no function call with call_id 'c9'", "input"),
    ],
)
def test_requests_that_cannot_be_rendered(
    encoding: HarmonyEncoding, fields: dict[str, object], message: str, param: str
) -> None:
    with pytest.raises(ConversionError, match=message) as e:
        conv.render_prompt(PromptSpec(**{"items": (), **fields}), encoding)  # type: ignore[arg-type]
    assert e.value.param == param


def test_reasoning_of_completed_turns_is_dropped_and_of_the_open_turn_kept() -> None:
    items: list[conv.Item] = [
        Text("user", "q1"),
        Reasoning("r1"),
        Text("assistant", "a1"),
        Text("user", "q2"),
        Reasoning("r2"),
        Text("assistant", "a2"),
        Text("user", "q3"),
        Reasoning("r3"),
        Text("assistant", "preamble", "commentary"),
        FunctionCall("c", "f", "{}"),
        FunctionOutput("c", "x"),
    ]
    kept = conv.drop_completed_reasoning(items)
    assert [i for i in kept if isinstance(i, Reasoning)] == [Reasoning("r3")]  # harmony's own rule keeps r2 too
    assert len(kept) == len(items) - 2


def test_history_messages_render_as_the_training_format(encoding: HarmonyEncoding) -> None:
    items = (
        Text("user", "w?"),
        Reasoning("think"),
        FunctionCall("c1", "get_weather", '{"city":"SF"}'),
        FunctionOutput("c1", "sunny"),
    )
    text = render(encoding, items=items, tools=(WEATHER,))
    assert text.endswith(
        "<|start|>user<|message|>w?<|end|><|start|>assistant<|channel|>analysis<|message|>think<|end|>"
        '<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{"city":"SF"}'
        "<|call|><|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>sunny<|end|>"
        "<|start|>assistant"
    )


def feed_all(parser: OutputParser, text: str) -> list[conv.OutputEvent]:
    out: list[conv.OutputEvent] = []
    for t in tokens(text):
        out += parser.feed(TokenEvent(t))
    return out + parser.finish()


def test_output_events_for_reasoning_then_answer(encoding: HarmonyEncoding) -> None:
    parser = OutputParser(encoding)
    text = "<|channel|>analysis<|message|>Hm.<|end|><|start|>assistant<|channel|>final<|message|>Yes.<|return|>"
    events = feed_all(parser, text)
    kinds = [(type(e).__name__, e.index) for e in events]
    assert kinds == [
        ("ItemStarted", 0),
        ("TextDelta", 0),
        ("TextDelta", 0),
        ("ItemDone", 0),
        ("ItemStarted", 1),
        ("TextDelta", 1),
        ("TextDelta", 1),
        ("ItemDone", 1),
    ]
    assert [(i.kind, i.text, i.truncated) for i in parser.items] == [
        (ItemKind.REASONING, "Hm.", False),
        (ItemKind.MESSAGE, "Yes.", False),
    ]
    assert sum(i.tokens for i in parser.items) == len(tokens(text))  # every token is accounted for
    assert parser.reasoning_tokens == parser.items[0].tokens == 6
    assert parser.problems == []


def test_function_call_items_strip_the_namespace_and_check_the_name(encoding: HarmonyEncoding) -> None:
    parser = OutputParser(encoding, declared=["get_weather"])
    feed_all(parser, "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{}<|call|>")
    (item,) = parser.items
    assert (item.kind, item.name, item.text) == (ItemKind.FUNCTION_CALL, "get_weather", "{}")
    assert parser.problems == []
    other = OutputParser(encoding, declared=["get_weather"])
    feed_all(other, "<|channel|>commentary to=browser.search<|message|>{}<|call|>")
    assert [(p.kind, p.detail) for p in other.problems] == [
        ("undeclared_tool", "the model called 'browser.search', which is not in tools")
    ]


def test_truncation_marks_the_open_item(encoding: HarmonyEncoding) -> None:
    parser = OutputParser(encoding)
    events = feed_all(parser, "<|channel|>final<|message|>Half a sen")
    assert isinstance(events[-1], ItemDone) and events[-1].item.truncated
    assert parser.items[0].text == "Half a sen" and parser.problems == []


def test_a_header_without_message_is_recovered_as_text(encoding: HarmonyEncoding) -> None:
    parser = OutputParser(encoding)
    events = feed_all(parser, "I refuse.<|end|>")
    assert [type(e) for e in events] == [ItemStarted, TextDelta, ItemDone]
    assert parser.items[0].text == "I refuse." and parser.items[0].kind is ItemKind.MESSAGE
    assert [p.kind for p in parser.problems] == ["missing_message"]


def test_random_tokens_never_raise(encoding: HarmonyEncoding) -> None:
    rng = random.Random(4)
    specials = [200002, 200003, 200005, 200006, 200007, 200008, 200012, 200100]
    known = {k.value for k in RepairKind} | {"unexpected_role", "undeclared_tool"}
    for _ in range(30):
        ids = [rng.choice(specials) if rng.random() < 0.2 else rng.randrange(0, 200000) for _ in range(60)]
        parser = OutputParser(encoding, declared=["f"])
        events = [e for t in ids for e in parser.feed(TokenEvent(t))] + parser.finish()
        assert all(item.done for item in parser.items)
        assert sum(item.tokens for item in parser.items) <= len(ids)
        assert {p.kind for p in parser.problems} <= known
        started = [e.index for e in events if isinstance(e, ItemStarted)]
        done = [e.index for e in events if isinstance(e, ItemDone)]
        assert started == done == list(range(len(parser.items)))  # every item opens once and closes once, in order


def test_history_round_trip() -> None:
    items: list[conv.Item] = [Text("user", "u"), Reasoning("r"), FunctionCall("c", "f", "{}"), FunctionOutput("c", "o")]
    assert [conv.item_from_dict(conv.item_to_dict(i)) for i in items] == items
    outputs = [
        conv.OutputItem(ItemKind.REASONING, "r"),
        conv.OutputItem(ItemKind.MESSAGE, "pre", channel="commentary"),
        conv.OutputItem(ItemKind.FUNCTION_CALL, "{}", name="f"),
        conv.OutputItem(ItemKind.MESSAGE, "done", channel="final"),
    ]
    assert conv.output_to_history(outputs, [None, None, "call_1", None]) == [
        Reasoning("r"),
        Text("assistant", "pre", "commentary"),
        FunctionCall("call_1", "f", "{}"),
        Text("assistant", "done", "final"),
    ]
