"""The one interface every built-in tool implements, and the helpers they share.

A tool owns one harmony namespace (`browser`, `python`): it says how it is declared in the system message
(`namespace_config`) and turns one assistant message addressed to it into the tool messages that answer it
(`process`). Anything that goes wrong on the model's side (bad arguments, unknown cursor, code that crashes or
never ends) becomes the text of a tool message the model can read and react to: `process` never raises for it.
`ToolError` is how a tool's internals signal such a problem; `process` catches it and turns it into a message.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any

from gptoss.harmony import Author, Message, Role, TextContent, ToolNamespaceConfig


class ToolError(Exception):
    """A problem for the model to read about: its text becomes the tool message."""


class Tool(ABC):
    """A built-in tool: one harmony namespace, called by the model, answered with tool messages."""

    name: str

    @abstractmethod
    def namespace_config(self) -> ToolNamespaceConfig:
        """The namespace to add to the system message while this tool is enabled."""

    @abstractmethod
    async def process(self, message: Message) -> list[Message]:
        """Answer `message` (an assistant message whose recipient is this tool) with tool messages.

        Errors the model caused come back as tool messages; this only raises for programming errors.
        """

    def close(self) -> None:  # noqa: B027 - optional hook; most tools hold nothing
        """Release what the tool holds (processes, connections). Safe to call twice."""


def message_text(message: Message) -> str:
    """The text of a message (its TextContent parts joined); other content kinds are ignored."""
    return "".join(c.text for c in message.content if isinstance(c, TextContent))


def tool_message(author: str, text: str, channel: str | None) -> Message:
    """A tool's reply in harmony form: from `author`, to the assistant, on the calling message's channel."""
    reply = Message.from_author_and_content(Author.new(Role.TOOL, author), text).with_recipient("assistant")
    return reply.with_channel(channel)


def parse_json_args(text: str, call: str, example: str) -> dict[str, Any]:
    """Tool arguments as a JSON object; empty text means no arguments. Raises ToolError with a usable hint."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ToolError(
            f"Invalid arguments for {call}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}). "
            f"Send one JSON object, for example {example}."
        ) from None
    if not isinstance(value, dict):
        raise ToolError(
            f"Invalid arguments for {call}: expected a JSON object, got {type(value).__name__}. "
            f"Send one JSON object, for example {example}."
        )
    return value


def int_arg(args: dict[str, Any], key: str, default: int, call: str) -> int:
    """An integer argument; integral floats and digit strings are accepted, anything else is a ToolError."""
    value = args.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool):
        raise ToolError(f"Invalid arguments for {call}: `{key}` must be an integer, got {json.dumps(value)}.")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ToolError(f"Invalid arguments for {call}: `{key}` must be an integer, got {json.dumps(value)}.")


def str_arg(args: dict[str, Any], key: str, call: str, *, required: bool) -> str | None:
    """A string argument; missing is a ToolError when required, a non-string always is."""
    value = args.get(key)
    if value is None:
        if required:
            raise ToolError(f"Invalid arguments for {call}: missing required field `{key}` (a string).")
        return None
    if not isinstance(value, str):
        raise ToolError(f"Invalid arguments for {call}: `{key}` must be a string, got {json.dumps(value)}.")
    return value
