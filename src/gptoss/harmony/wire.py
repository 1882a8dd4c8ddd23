"""Read openai-harmony's conversation JSON into our dataclasses, with errors that name the offending field.

Accepted shape (what openai-harmony's `Conversation.to_json()` writes and its Rust side reads):
`{"messages": [{"role", "name"?, "content": [...] | "text", "channel"?, "recipient"?, "content_type"?}]}`
with content items tagged `"type": "text" | "system_content" | "developer_content"`.
"""

from __future__ import annotations

from typing import Any

from gptoss.harmony.errors import HarmonyError
from gptoss.harmony.messages import (
    Author,
    ChannelConfig,
    Content,
    Conversation,
    DeveloperContent,
    Message,
    SystemContent,
    TextContent,
    ToolDescription,
    ToolNamespaceConfig,
    parse_reasoning_effort,
    parse_role,
)
from gptoss.harmony.schema import check_tool_parameters


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def expect_object(data: object, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise HarmonyError(f"{where}: expected a JSON object, got {json_type(data)}")
    return data


def expect_list(data: object, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise HarmonyError(f"{where}: expected a JSON array, got {json_type(data)}")
    return data


def optional_str(data: dict[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise HarmonyError(f"{where}.{key}: expected a string, got {json_type(value)}")
    return value


def required_str(data: dict[str, Any], key: str, where: str) -> str:
    if key not in data:
        raise HarmonyError(f"{where}.{key}: missing")
    value = optional_str(data, key, where)
    if value is None:
        raise HarmonyError(f"{where}.{key}: expected a string, got null")
    return value


def tool_from_dict(data: object, where: str) -> ToolDescription:
    obj = expect_object(data, where)
    name = required_str(obj, "name", where)
    description = required_str(obj, "description", where)
    parameters = obj.get("parameters")
    check_tool_parameters(parameters, f"{where}.parameters")
    return ToolDescription(name, description, parameters)


def namespace_from_dict(data: object, where: str) -> ToolNamespaceConfig:
    obj = expect_object(data, where)
    tools = [
        tool_from_dict(t, f"{where}.tools[{i}]") for i, t in enumerate(expect_list(obj.get("tools"), f"{where}.tools"))
    ]
    return ToolNamespaceConfig(required_str(obj, "name", where), optional_str(obj, "description", where), tools)


def tools_from_dict(data: object, where: str) -> dict[str, ToolNamespaceConfig] | None:
    if data is None:
        return None
    obj = expect_object(data, where)
    return {key: namespace_from_dict(ns, f"{where}.{key}") for key, ns in obj.items()}


def channel_config_from_dict(data: object, where: str) -> ChannelConfig | None:
    if data is None:
        return None
    obj = expect_object(data, where)
    channels = expect_list(obj.get("valid_channels"), f"{where}.valid_channels")
    if not all(isinstance(c, str) for c in channels):
        raise HarmonyError(f"{where}.valid_channels: expected a list of strings")
    required = obj.get("channel_required")
    if not isinstance(required, bool):
        raise HarmonyError(f"{where}.channel_required: expected true or false")
    return ChannelConfig(list(channels), required)


def system_from_dict(obj: dict[str, Any], where: str) -> SystemContent:
    """An absent key takes SystemContent's default (as openai-harmony's pydantic model does); null means None."""
    fields: dict[str, Any] = {}
    for key in ("model_identity", "conversation_start_date", "knowledge_cutoff"):
        if key in obj:
            fields[key] = optional_str(obj, key, where)
    if "reasoning_effort" in obj:
        effort = obj["reasoning_effort"]
        fields["reasoning_effort"] = (
            None if effort is None else parse_reasoning_effort(effort, f"{where}.reasoning_effort")
        )
    if "channel_config" in obj:
        fields["channel_config"] = channel_config_from_dict(obj["channel_config"], f"{where}.channel_config")
    fields["tools"] = tools_from_dict(obj.get("tools"), f"{where}.tools")
    return SystemContent(**fields)


def developer_from_dict(obj: dict[str, Any], where: str) -> DeveloperContent:
    return DeveloperContent(
        instructions=optional_str(obj, "instructions", where),
        tools=tools_from_dict(obj.get("tools"), f"{where}.tools"),
    )


def content_from_dict(data: object, where: str) -> Content:
    obj = expect_object(data, where)
    kind = obj.get("type")
    if kind == "text":
        return TextContent(required_str(obj, "text", where))
    if kind == "system_content":
        return system_from_dict(obj, where)
    if kind == "developer_content":
        return developer_from_dict(obj, where)
    raise HarmonyError(
        f"{where}.type: unknown content type {kind!r} (expected one of: text, system_content, developer_content)"
    )


def message_from_dict(data: object, where: str) -> Message:
    obj = expect_object(data, where)
    if "role" not in obj:
        raise HarmonyError(f"{where}.role: missing")
    author = Author(parse_role(obj["role"], f"{where}.role"), optional_str(obj, "name", where))
    raw = obj.get("content")
    if isinstance(raw, str):  # openai-harmony's Rust side accepts a bare string as one text item
        content: list[Content] = [TextContent(raw)]
    else:
        items = expect_list(raw, f"{where}.content")
        content = [content_from_dict(c, f"{where}.content[{i}]") for i, c in enumerate(items)]
    return Message(
        author,
        content,
        channel=optional_str(obj, "channel", where),
        recipient=optional_str(obj, "recipient", where),
        content_type=optional_str(obj, "content_type", where),
    )


def conversation_from_dict(data: object) -> Conversation:
    obj = expect_object(data, "conversation")
    items = expect_list(obj.get("messages"), "messages")
    conversation = Conversation([message_from_dict(m, f"messages[{i}]") for i, m in enumerate(items)])
    conversation.validate()
    return conversation
