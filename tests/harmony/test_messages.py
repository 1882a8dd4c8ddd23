"""Data model and JSON: the fluent API builds what openai-harmony's builds, `to_json()` is byte-identical, JSON moves
between the two libraries unchanged, and every kind of invalid conversation JSON is rejected naming the field."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest

import gptoss.harmony as gh
from gptoss.harmony import HarmonyError

from . import gen


def fluent(m: ModuleType) -> Any:
    schema = {"type": "object", "properties": {"a": {"type": "string", "default": None}}}
    tool = m.ToolDescription.new("f", "desc", schema)
    system = (
        m.SystemContent.new()
        .with_model_identity("You are a test.")
        .with_reasoning_effort(m.ReasoningEffort.LOW)
        .with_conversation_start_date("2025-06-28")
        .with_knowledge_cutoff("2024-01")
        .with_required_channels(["analysis", "final"])
        .with_browser_tool()
        .with_python_tool()
    )
    developer = m.DeveloperContent.new().with_instructions("Be brief.").with_function_tools([tool])
    call = m.Message.from_role_and_content(m.Role.ASSISTANT, "{}").with_channel("analysis")
    return m.Conversation.from_messages(
        [
            m.Message.from_role_and_content(m.Role.SYSTEM, system),
            m.Message.from_role_and_content(m.Role.DEVELOPER, developer),
            m.Message.from_role_and_contents(m.Role.USER, [m.TextContent(text="a"), m.TextContent(text="b")]),
            call.with_recipient("functions.f").with_content_type("<|constrain|>json"),
            m.Message.from_author_and_content(m.Author.new(m.Role.TOOL, "functions.f"), "out")
            .with_channel("analysis")
            .with_recipient("assistant"),
            m.Message.from_role_and_content(m.Role.ASSISTANT, "done").with_channel("final").adding_content("!"),
        ]
    )


def test_fluent_api_builds_the_same_json(oh: ModuleType) -> None:
    assert fluent(gh).to_json() == fluent(oh).to_json()


def test_builtin_tools_equal_openai_harmony(oh: ModuleType) -> None:
    assert gh.ToolNamespaceConfig.browser().to_dict() == oh.ToolNamespaceConfig.browser().model_dump(exclude_none=True)
    assert gh.ToolNamespaceConfig.python().to_dict() == oh.ToolNamespaceConfig.python().model_dump(exclude_none=True)


def test_defaults_and_setters_mutate(oh: ModuleType) -> None:
    content = gh.SystemContent.new()
    assert content.with_knowledge_cutoff("x") is content
    assert gh.SystemContent().to_dict() == json.loads(json.dumps(oh.SystemContent().to_dict()))
    assert gh.DeveloperContent().to_dict() == {"type": "developer_content"}
    message = gh.Message.from_role_and_content("user", "x")
    assert message.with_channel(gh.Channel.FINAL) is message and message.channel == "final"


@pytest.mark.parametrize("seed", range(2))
def test_json_moves_between_libraries_unchanged(oh: ModuleType, seed: int) -> None:
    for data in gen.conversations(seed=6000 + seed, count=100):
        theirs = oh.Conversation.from_json(json.dumps(data))
        ours = gh.Conversation.from_json(theirs.to_json())
        assert ours.to_json() == theirs.to_json()
        assert oh.Conversation.from_json(ours.to_json()) == theirs
        assert gh.Conversation.from_dict(json.loads(ours.to_json())) == ours


def test_absent_keys_take_defaults_and_null_means_none(oh: ModuleType) -> None:
    payload = json.dumps({"messages": [{"role": "system", "content": [{"type": "system_content"}]}]})
    assert gh.Conversation.from_json(payload).to_json() == oh.Conversation.from_json(payload).to_json()
    explicit = {"type": "system_content", "reasoning_effort": None, "channel_config": None, "model_identity": None}
    (content,) = gh.Message.from_dict({"role": "system", "content": [explicit]}).content
    assert isinstance(content, gh.SystemContent)
    assert (content.reasoning_effort, content.channel_config, content.model_identity) == (None, None, None)


def test_plain_string_content() -> None:
    message = gh.Message.from_dict({"role": "user", "content": "hi"})
    assert message == gh.Message(gh.Author(gh.Role.USER), [gh.TextContent("hi")])
    assert message.to_json() == '{"role": "user", "name": null, "content": [{"type": "text", "text": "hi"}]}'


def conversation(**message: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi", **message}]}


def system_with(**fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": [{"type": "system_content", **fields}]}]}


def tools_with(tool: Any) -> dict[str, Any]:
    ns = {"name": "functions", "tools": [tool]}
    return {"messages": [{"role": "developer", "content": [{"type": "developer_content", "tools": {"functions": ns}}]}]}


BAD_JSON = [
    ([], "conversation: expected a JSON object, got array"),
    ({}, "messages: expected a JSON array, got null"),
    ({"messages": [3]}, r"messages\[0\]: expected a JSON object, got number"),
    ({"messages": [{"content": "x"}]}, r"messages\[0\]\.role: missing"),
    (conversation(role="bot"), r"messages\[0\]\.role: unknown role 'bot' \(expected one of: user, assistant"),
    (conversation(role=None), r"messages\[0\]\.role: unknown role None"),
    (conversation(channel="fianl"), r"messages\[0\]\.channel: unknown channel 'fianl' \(expected one of: analysis"),
    (conversation(channel=3), r"messages\[0\]\.channel: expected a string, got number"),
    (conversation(name=["x"]), r"messages\[0\]\.name: expected a string, got array"),
    (conversation(content=3), r"messages\[0\]\.content: expected a JSON array, got number"),
    (conversation(content=[{"type": "image"}]), r"messages\[0\]\.content\[0\]\.type: unknown content type 'image'"),
    (conversation(content=[{"type": "text"}]), r"messages\[0\]\.content\[0\]\.text: missing"),
    (conversation(content=[{"type": "text", "text": None}]), r"content\[0\]\.text: expected a string, got null"),
    ({"messages": [{"role": "tool", "content": "x"}]}, r"messages\[0\]\.name: Tools should have a name!"),
    (system_with(reasoning_effort="Extreme"), r"content\[0\]\.reasoning_effort: unknown reasoning effort 'Extreme'"),
    (system_with(channel_config={"valid_channels": "final", "channel_required": True}),
     r"content\[0\]\.channel_config\.valid_channels: expected a JSON array, got string"),
    (system_with(channel_config={"valid_channels": []}), r"channel_config\.channel_required: expected true or false"),
    (system_with(channel_config={"valid_channels": [1], "channel_required": True}),
     r"channel_config\.valid_channels: expected a list of strings"),
    (system_with(tools=[]), r"content\[0\]\.tools: expected a JSON object, got array"),
    (system_with(tools={"x": {"name": "x"}}), r"content\[0\]\.tools\.x\.tools: expected a JSON array, got null"),
    (tools_with({"name": "f"}), r"tools\.functions\.tools\[0\]\.description: missing"),
    (tools_with({"name": "f", "description": "", "parameters": []}),
     r"tools\[0\]\.parameters: must be a JSON Schema object, got list"),
    (tools_with({"name": "f", "description": "", "parameters": {"type": "strng"}}),
     r"tools\[0\]\.parameters\.type: unknown type 'strng'"),
    (tools_with({"name": "f", "description": "", "parameters": {"properties": {"a": {"required": "a"}}}}),
     r"tools\[0\]\.parameters\.properties\.a\.required: must be a list of property names"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "message"), BAD_JSON)
def test_invalid_conversation_json(data: Any, message: str) -> None:
    with pytest.raises(HarmonyError, match=message):
        gh.Conversation.from_dict(data)


def test_invalid_json_text() -> None:
    with pytest.raises(HarmonyError, match="not valid JSON: Expecting property name.*line 1 column 2"):
        gh.Conversation.from_json("{not json")


def test_custom_channel_declared_by_the_system_message_is_accepted() -> None:
    data = system_with(channel_config={"valid_channels": ["scratch"], "channel_required": True})
    data["messages"].append({"role": "assistant", "content": "x", "channel": "scratch"})
    assert gh.Conversation.from_dict(data).messages[1].channel == "scratch"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: gh.Author(role="bot"), "role: unknown role 'bot'"),  # type: ignore[arg-type]
        (lambda: gh.SystemContent.new().with_reasoning_effort("max"), "unknown reasoning effort 'max'"),
        (lambda: gh.Message.from_role_and_content("user", 3), "content: expected str, TextContent"),  # type: ignore[arg-type]
        (lambda: gh.Conversation.from_messages(["hi"]), r"messages\[0\]: expected a Message, got str"),  # type: ignore[list-item]
        (lambda: gh.ToolDescription.new("f", "", {"type": "object", "properties": []}),
         "tool 'f' parameters.properties: must be an object mapping names to schemas"),
    ],
)  # fmt: skip
def test_invalid_objects(make: Any, message: str) -> None:
    with pytest.raises(HarmonyError, match=message):
        make()


def test_directly_built_conversations_are_validated_too(enc: gh.HarmonyEncoding) -> None:
    with pytest.raises(HarmonyError, match=r"messages\[1\]: expected a Message, got str"):
        enc.render_conversation(gh.Conversation([gh.Message.from_role_and_content("user", "x"), "oops"]))  # type: ignore[list-item]
    bad_item = gh.Message(gh.Author(gh.Role.USER), ["raw"])  # type: ignore[list-item]
    with pytest.raises(HarmonyError, match=r"messages\[0\]\.content\[0\]: expected TextContent, SystemContent"):
        enc.render_conversation(gh.Conversation([bad_item]))
    with pytest.raises(HarmonyError, match="unsupported content item 'raw'"):
        enc.render(bad_item)


def test_harmony_error_is_a_value_error() -> None:
    assert issubclass(HarmonyError, ValueError)
