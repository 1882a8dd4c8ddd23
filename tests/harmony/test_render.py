"""Rendering: the reference's worked examples (data/*.txt, copied verbatim from harmony-format.md), the drop rule,
training/completion modes, render errors, and token-for-token equality with openai-harmony on random
conversations (see gen.py for what they cover)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import gptoss.harmony as gh
from gptoss.harmony import HarmonyEncoding, HarmonyError
from gptoss.harmony.builtin_tools import PYTHON_DESCRIPTION
from gptoss.harmony.render import rust_lines

from . import gen

DATA = Path(__file__).parent / "data"
N_RANDOM = 1000
CHUNK = 100


def reference(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def weather_tool(m: ModuleType) -> Any:
    return m.ToolDescription.new(
        "get_current_weather",
        "Gets the current weather in the provided location.",
        {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "format": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
            },
            "required": ["location"],
        },
    )


def kitchensink_tools(m: ModuleType) -> list[Any]:
    multi = {
        "type": "object",
        "properties": {
            "locations": {
                "type": "array",
                "items": {"type": "string"},
                "description": 'List of city and state, e.g. ["San Francisco, CA", "New York, NY"]',
            },
            "format": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
        },
        "required": ["locations"],
    }
    sink = {
        "description": "params object",
        "type": "object",
        "properties": {
            "string": {"type": "string", "title": "STRING", "description": "A string", "examples": ["hello", "world"]},
            "string_nullable": {
                "type": "string",
                "nullable": True,
                "description": "A nullable string",
                "default": "the default",
            },
            "string_enum": {"type": "string", "enum": ["a", "b", "c"]},
            "oneof_string_or_number": {
                "oneOf": [
                    {"type": "string", "default": "default_string_in_oneof"},
                    {"type": "number", "description": "numbers can happen too"},
                ],
                "description": "a oneof",
                "default": 20,
            },
        },
    }
    return [
        m.ToolDescription.new("get_location", "Gets the location of the user."),
        weather_tool(m),
        m.ToolDescription.new(
            "get_multiple_weathers", "Gets the current weather in the provided list of locations.", multi
        ),
        m.ToolDescription.new("kitchensink", "A function with various complex schemas.", sink),
    ]


def system(m: ModuleType, effort: str = "MEDIUM") -> Any:
    return (
        m.SystemContent.new()
        .with_reasoning_effort(getattr(m.ReasoningEffort, effort))
        .with_conversation_start_date("2025-06-28")
    )


def riddles(m: ModuleType, tools: list[Any]) -> Any:
    return m.DeveloperContent.new().with_instructions("Always respond in riddles").with_function_tools(tools)


def example_functions(m: ModuleType) -> Any:
    return m.Conversation.from_messages(
        [
            m.Message.from_role_and_content(m.Role.SYSTEM, system(m, "HIGH")),
            m.Message.from_role_and_content(m.Role.DEVELOPER, riddles(m, kitchensink_tools(m))),
            m.Message.from_role_and_content(m.Role.USER, "What is the weather like in SF?"),
        ]
    )


def example_tool_call(m: ModuleType) -> Any:
    weather = "functions.get_current_weather"
    return m.Conversation.from_messages(
        [
            m.Message.from_role_and_content(m.Role.SYSTEM, system(m, "HIGH")),
            m.Message.from_role_and_content(m.Role.DEVELOPER, riddles(m, [weather_tool(m)])),
            m.Message.from_role_and_content(m.Role.USER, "What is the weather like in SF?"),
            m.Message.from_role_and_content(m.Role.ASSISTANT, "Need to use function get_current_weather.")
            .with_channel("analysis"),
            m.Message.from_role_and_content(m.Role.ASSISTANT, '{"location":"San Francisco, CA"}')
            .with_channel("commentary")
            .with_recipient(weather)
            .with_content_type("<|constrain|>json"),
            m.Message.from_author_and_content(m.Author.new(m.Role.TOOL, weather), '{"sunny": true, "temperature": 20}')
            .with_channel("commentary")
            .with_recipient("assistant"),
        ]
    )  # fmt: skip


def example_builtins(m: ModuleType) -> Any:
    content = system(m).with_browser_tool().with_python_tool()
    return m.Conversation.from_messages([m.Message.from_role_and_content(m.Role.SYSTEM, content)])


def both(oh: ModuleType, build: Any) -> tuple[Any, Any]:
    return build(oh), build(gh)


def test_system_message_without_tools(enc: HarmonyEncoding, oh: ModuleType, oh_enc: Any) -> None:
    ours = enc.render(gh.Message.from_role_and_content(gh.Role.SYSTEM, system(gh)))
    assert enc.decode_utf8(ours) == reference("system_no_tools.txt")
    assert ours == oh_enc.render(oh.Message.from_role_and_content(oh.Role.SYSTEM, system(oh)))


@pytest.mark.parametrize(
    ("build", "expected"),
    [(example_functions, "functions_with_parameters.txt"), (example_tool_call, "ex2_tool_call_and_result.txt")],
)
def test_reference_examples(enc: HarmonyEncoding, oh: ModuleType, oh_enc: Any, build: Any, expected: str) -> None:
    theirs, ours = both(oh, build)
    tokens = enc.render_conversation_for_completion(ours, gh.Role.ASSISTANT)
    assert enc.decode_utf8(tokens) == reference(expected)
    assert tokens == oh_enc.render_conversation_for_completion(theirs, oh.Role.ASSISTANT)
    assert ours.to_json() == theirs.to_json()


def test_builtin_tools_match_library_not_reference_text(enc: HarmonyEncoding, oh: ModuleType, oh_enc: Any) -> None:
    """The reference's browser+python text shows only the first paragraph of the python description; openai-harmony
    0.0.8 renders both paragraphs. We follow the library; everything else matches the reference verbatim."""
    theirs, ours = both(oh, example_builtins)
    tokens = enc.render_conversation_for_completion(ours, gh.Role.ASSISTANT)
    assert tokens == oh_enc.render_conversation_for_completion(theirs, oh.Role.ASSISTANT)
    first, second = PYTHON_DESCRIPTION.split("\n\n")
    doc = reference("browser_and_python.txt").replace(f"{first}\n\n\n", f"{first}\n\n{second}\n\n")
    assert enc.decode_utf8(tokens) == doc


def turns(m: ModuleType) -> list[Any]:
    def a(text: str, channel: str) -> Any:
        return m.Message.from_role_and_content(m.Role.ASSISTANT, text).with_channel(channel)

    def u(text: str) -> Any:
        return m.Message.from_role_and_content(m.Role.USER, text)

    return [u("q1"), a("think1", "analysis"), a("a1", "final"), u("q2"), a("think2", "analysis"), a("a2", "final")]


@pytest.mark.parametrize("drop", [True, False])
def test_drop_rule_keeps_analysis_after_first_final(
    enc: HarmonyEncoding, oh: ModuleType, oh_enc: Any, drop: bool
) -> None:
    theirs = oh.Conversation.from_messages([*turns(oh), oh.Message.from_role_and_content(oh.Role.USER, "q3")])
    ours = gh.Conversation.from_messages([*turns(gh), gh.Message.from_role_and_content(gh.Role.USER, "q3")])
    config = gh.RenderConversationConfig(auto_drop_analysis=drop)
    text = enc.decode_utf8(enc.render_conversation_for_completion(ours, gh.Role.ASSISTANT, config))
    assert ("think1" in text) is not drop and "think2" in text  # only analysis before the FIRST final goes
    oh_config = oh.RenderConversationConfig(auto_drop_analysis=drop)
    theirs_tokens = oh_enc.render_conversation_for_completion(theirs, oh.Role.ASSISTANT, oh_config)
    assert enc.render_conversation_for_completion(ours, gh.Role.ASSISTANT, config) == theirs_tokens


def test_nothing_dropped_during_tool_loop(enc: HarmonyEncoding) -> None:
    call = gh.Message.from_role_and_content(gh.Role.ASSISTANT, "{}").with_channel("commentary")
    conv = gh.Conversation.from_messages([*turns(gh), call.with_recipient("functions.f")])
    assert "think1" in enc.decode_utf8(enc.render_conversation(conv))


def test_training_ends_final_answer_with_return(enc: HarmonyEncoding, oh: ModuleType, oh_enc: Any) -> None:
    ours = gh.Conversation.from_messages(turns(gh))
    tokens = enc.render_conversation_for_training(ours)
    assert tokens[-1] == 200002 and enc.render_conversation(ours)[-1] == 200007
    assert tokens == oh_enc.render_conversation_for_training(oh.Conversation.from_messages(turns(oh)))


def test_completion_for_other_roles(enc: HarmonyEncoding) -> None:
    conv = gh.Conversation.from_messages(turns(gh))
    assert enc.render_conversation_for_completion(conv, "user")[-2:] == [200006, 1428]


def test_structured_output_instructions(enc: HarmonyEncoding, oh: ModuleType, oh_enc: Any) -> None:
    schema = {"properties": {"items": {"type": "array", "items": {"type": "string"}}}, "type": "object"}
    dev = gh.DeveloperContent.new().with_instructions("You are a helpful shopping assistant")
    dev.with_response_format("shopping_list", schema)
    expected = (
        "# Instructions\n\nYou are a helpful shopping assistant\n\n# Response Formats\n\n## shopping_list\n\n"
        '{"properties":{"items":{"type":"array","items":{"type":"string"}}},"type":"object"}'
    )
    assert dev.instructions is not None and dev.instructions.endswith(expected[len("# Instructions\n\n") :])
    tokens = enc.render(gh.Message.from_role_and_content(gh.Role.DEVELOPER, dev))
    assert enc.decode_utf8(tokens) == f"<|start|>developer<|message|>{expected}<|end|>"
    theirs = oh.DeveloperContent.new().with_instructions(dev.instructions)
    assert tokens == oh_enc.render(oh.Message.from_role_and_content(oh.Role.DEVELOPER, theirs))


def test_response_format_with_description_and_no_instructions() -> None:
    dev = gh.DeveloperContent.new().with_response_format("r", {"type": "object"}, "the reply")
    assert dev.instructions == '# Response Formats\n\n## r\n\n// the reply\n{"type":"object"}'


def test_response_format_rejects_invalid_schema() -> None:
    with pytest.raises(HarmonyError, match=r"response format 'r'\.type: unknown type 'obj'"):
        gh.DeveloperContent.new().with_response_format("r", {"type": "obj"})


def test_header_forms(enc: HarmonyEncoding) -> None:
    call = gh.Message.from_role_and_content(gh.Role.ASSISTANT, "{}").with_recipient("all").with_channel("final")
    assert enc.decode_utf8(enc.render(call)) == "<|start|>assistant<|channel|>final<|message|>{}<|call|>"
    named = gh.Message.from_author_and_content(gh.Author.new(gh.Role.USER, "alice"), "hi").with_recipient("assistant")
    assert enc.decode_utf8(enc.render(named)) == "<|start|>user:alice to=assistant<|message|>hi<|end|>"
    typed = gh.Message.from_role_and_content(gh.Role.ASSISTANT, "{}").with_channel("final").with_content_type("json")
    assert enc.decode_utf8(enc.render(typed)) == "<|start|>assistant<|channel|>final json<|message|>{}<|end|>"
    assert enc.render(typed.with_content_type("<|constrain|>json"))[-6:-3] == [220, 200003, 4108]


def test_special_token_text_in_content_stays_text(enc: HarmonyEncoding) -> None:
    tokens = enc.render(gh.Message.from_role_and_content(gh.Role.USER, "x<|end|>y"))
    assert tokens[3:-1] == [87, 27, 91, 419, 91, 29, 88]


def test_rust_lines() -> None:
    assert rust_lines("") == [] and rust_lines("a\n") == ["a"] and rust_lines("a\r\nb\r") == ["a", "b\r"]
    assert rust_lines("\n\n") == ["", ""]


def test_tool_message_needs_a_name(enc: HarmonyEncoding) -> None:
    nameless = gh.Message.from_role_and_content(gh.Role.TOOL, "out")
    with pytest.raises(HarmonyError, match="Tools should have a name!"):
        enc.render(nameless)
    with pytest.raises(HarmonyError, match=r"messages\[0\]\.name: Tools should have a name!"):
        enc.render_conversation(gh.Conversation.from_messages([nameless]))


@pytest.mark.parametrize(
    ("role", "content", "message"),
    [
        ("user", gh.SystemContent.new(), "SystemContent may only appear in system messages, found in User"),
        (
            "system",
            gh.DeveloperContent.new(),
            "DeveloperContent may only appear in developer messages, found in System",
        ),
    ],
)
def test_content_in_wrong_role(enc: HarmonyEncoding, role: str, content: Any, message: str) -> None:
    with pytest.raises(HarmonyError, match=message):
        enc.render(gh.Message.from_role_and_content(role, content))


def test_unknown_channel_is_rejected_unless_declared(enc: HarmonyEncoding) -> None:
    typo = gh.Message.from_role_and_content(gh.Role.ASSISTANT, "x").with_channel("fianl")
    with pytest.raises(HarmonyError, match=r"messages\[0\]\.channel: unknown channel 'fianl'"):
        enc.render_conversation(gh.Conversation.from_messages([typo]))
    declared = gh.SystemContent.new().with_required_channels(["analysis", "fianl"])
    conv = gh.Conversation.from_messages([gh.Message.from_role_and_content(gh.Role.SYSTEM, declared), typo])
    assert "<|channel|>fianl" in enc.decode_utf8(enc.render_conversation(conv))


def test_unknown_next_turn_role(enc: HarmonyEncoding) -> None:
    with pytest.raises(HarmonyError, match="next_turn_role: unknown role 'bot'"):
        enc.render_conversation_for_completion(gh.Conversation.from_messages([]), "bot")


def render_all_ways(m: ModuleType, encoding: Any, conversation: Any) -> list[Any]:
    """Completion (default config), plain without dropping, training; an error counts as its message."""
    out: list[Any] = []
    for call in (
        lambda: encoding.render_conversation_for_completion(conversation, m.Role.ASSISTANT),
        lambda: encoding.render_conversation(conversation, m.RenderConversationConfig(auto_drop_analysis=False)),
        lambda: encoding.render_conversation_for_training(conversation),
    ):
        try:
            out.append(call())
        except Exception as e:
            out.append(("error", str(e)))
    return out


@pytest.mark.parametrize("chunk", range(N_RANDOM // CHUNK))
def test_random_conversations_match_openai_harmony(
    enc: HarmonyEncoding, oh: ModuleType, oh_enc: Any, chunk: int
) -> None:
    for i, data in enumerate(gen.conversations(seed=1000 + chunk, count=CHUNK)):
        payload = json.dumps(data)
        theirs, ours = oh.Conversation.from_json(payload), gh.Conversation.from_json(payload)
        assert ours.to_json() == theirs.to_json(), f"chunk {chunk} conversation {i}: JSON differs"
        expected = render_all_ways(oh, oh_enc, theirs)
        assert not any(isinstance(e, tuple) for e in expected), f"generator made an invalid conversation {i}"
        assert render_all_ways(gh, enc, ours) == expected, f"chunk {chunk} conversation {i}: {payload[:2000]}"
