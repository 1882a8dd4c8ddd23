"""The harmony data model: roles, authors, content, tool namespaces, messages and conversations.

Names, defaults and fluent setters follow openai-harmony (its setters mutate and return self, and so do ours),
so code ports by changing the import. Objects are dataclasses; `to_dict()`/`to_json()` write exactly the JSON that
openai-harmony's `to_dict()`/`Conversation.to_json()` write (same keys, same order, None fields left out of
content objects), and `from_dict()`/`from_json()` (in `wire.py`) read it back with errors that name the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gptoss.harmony import builtin_tools
from gptoss.harmony.errors import HarmonyError
from gptoss.harmony.schema import check_tool_parameters

DEFAULT_MODEL_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
DEFAULT_KNOWLEDGE_CUTOFF = "2024-06"
KNOWN_CHANNELS = ("analysis", "commentary", "final")


class Role(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    DEVELOPER = "developer"
    TOOL = "tool"


class ReasoningEffort(StrEnum):
    """Wire values are capitalised (openai-harmony's serde names); they render lowercase."""

    LOW = "Low"
    MEDIUM = "Medium"
    HIGH = "High"


class Channel(StrEnum):
    """The channels gpt-oss was trained with; plain strings work wherever a channel is expected."""

    ANALYSIS = "analysis"
    COMMENTARY = "commentary"
    FINAL = "final"


def parse_role(value: object, where: str = "role") -> Role:
    if isinstance(value, Role):
        return value
    try:
        return Role(value if isinstance(value, str) else repr(value))
    except ValueError:
        expected = ", ".join(r.value for r in Role)
        raise HarmonyError(f"{where}: unknown role {value!r} (expected one of: {expected})") from None


def parse_reasoning_effort(value: object, where: str = "reasoning_effort") -> ReasoningEffort:
    if isinstance(value, ReasoningEffort):
        return value
    try:
        return ReasoningEffort(value if isinstance(value, str) else repr(value))
    except ValueError:
        expected = ", ".join(e.value for e in ReasoningEffort)
        raise HarmonyError(f"{where}: unknown reasoning effort {value!r} (expected one of: {expected})") from None


@dataclass
class Author:
    role: Role
    name: str | None = None

    def __post_init__(self) -> None:
        self.role = parse_role(self.role)

    @classmethod
    def new(cls, role: Role | str, name: str | None = None) -> Author:
        return cls(parse_role(role), name)


@dataclass
class TextContent:
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


@dataclass
class ToolDescription:
    """One function tool; `parameters` is a JSON Schema (validated here, rendered as TypeScript)."""

    name: str
    description: str
    parameters: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_tool_parameters(self.parameters, f"tool {self.name!r} parameters")

    @classmethod
    def new(cls, name: str, description: str, parameters: dict[str, Any] | None = None) -> ToolDescription:
        return cls(name, description, parameters)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        if self.parameters is not None:
            out["parameters"] = self.parameters
        return out


@dataclass
class ToolNamespaceConfig:
    name: str
    description: str | None = None
    tools: list[ToolDescription] = field(default_factory=list)

    @staticmethod
    def browser() -> ToolNamespaceConfig:
        """The built-in browsing tool gpt-oss was trained with (search, open, find)."""
        tools = [ToolDescription(*spec) for spec in builtin_tools.browser_tools()]
        return ToolNamespaceConfig("browser", builtin_tools.BROWSER_DESCRIPTION, tools)

    @staticmethod
    def python() -> ToolNamespaceConfig:
        """The built-in stateful python tool; it has no functions, only a description."""
        return ToolNamespaceConfig("python", builtin_tools.PYTHON_DESCRIPTION, [])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            out["description"] = self.description
        out["tools"] = [t.to_dict() for t in self.tools]
        return out


@dataclass
class ChannelConfig:
    valid_channels: list[str]
    channel_required: bool

    @staticmethod
    def require_channels(channels: Sequence[str]) -> ChannelConfig:
        return ChannelConfig([str(c) for c in channels], True)

    def to_dict(self) -> dict[str, Any]:
        return {"valid_channels": list(self.valid_channels), "channel_required": self.channel_required}


def default_channel_config() -> ChannelConfig:
    return ChannelConfig.require_channels(KNOWN_CHANNELS)


def tools_to_dict(tools: dict[str, ToolNamespaceConfig]) -> dict[str, Any]:
    return {key: ns.to_dict() for key, ns in tools.items()}


@dataclass
class SystemContent:
    """The system message: identity, dates, reasoning effort, built-in tools and the channel rules."""

    model_identity: str | None = DEFAULT_MODEL_IDENTITY
    reasoning_effort: ReasoningEffort | None = ReasoningEffort.MEDIUM
    conversation_start_date: str | None = None
    knowledge_cutoff: str | None = DEFAULT_KNOWLEDGE_CUTOFF
    channel_config: ChannelConfig | None = field(default_factory=default_channel_config)
    tools: dict[str, ToolNamespaceConfig] | None = None

    def __post_init__(self) -> None:
        if self.reasoning_effort is not None:
            self.reasoning_effort = parse_reasoning_effort(self.reasoning_effort)

    @classmethod
    def new(cls) -> SystemContent:
        return cls()

    def with_model_identity(self, model_identity: str) -> SystemContent:
        self.model_identity = model_identity
        return self

    def with_reasoning_effort(self, reasoning_effort: ReasoningEffort | str) -> SystemContent:
        self.reasoning_effort = parse_reasoning_effort(reasoning_effort)
        return self

    def with_conversation_start_date(self, conversation_start_date: str) -> SystemContent:
        self.conversation_start_date = conversation_start_date
        return self

    def with_knowledge_cutoff(self, knowledge_cutoff: str) -> SystemContent:
        self.knowledge_cutoff = knowledge_cutoff
        return self

    def with_channel_config(self, channel_config: ChannelConfig) -> SystemContent:
        self.channel_config = channel_config
        return self

    def with_required_channels(self, channels: Sequence[str]) -> SystemContent:
        self.channel_config = ChannelConfig.require_channels(channels)
        return self

    def with_tools(self, ns_config: ToolNamespaceConfig) -> SystemContent:
        self.tools = {**(self.tools or {}), ns_config.name: ns_config}
        return self

    def with_browser_tool(self) -> SystemContent:
        return self.with_tools(ToolNamespaceConfig.browser())

    def with_python_tool(self) -> SystemContent:
        return self.with_tools(ToolNamespaceConfig.python())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("model_identity", "reasoning_effort", "conversation_start_date", "knowledge_cutoff"):
            value = getattr(self, key)
            if value is not None:
                out[key] = str(value)
        if self.channel_config is not None:
            out["channel_config"] = self.channel_config.to_dict()
        if self.tools is not None:
            out["tools"] = tools_to_dict(self.tools)
        out["type"] = "system_content"
        return out


@dataclass
class DeveloperContent:
    """The developer message: instructions and function tools (and, inside the instructions, response formats)."""

    instructions: str | None = None
    tools: dict[str, ToolNamespaceConfig] | None = None

    @classmethod
    def new(cls) -> DeveloperContent:
        return cls()

    def with_instructions(self, instructions: str) -> DeveloperContent:
        self.instructions = instructions
        return self

    def with_tools(self, ns_config: ToolNamespaceConfig) -> DeveloperContent:
        self.tools = {**(self.tools or {}), ns_config.name: ns_config}
        return self

    def with_function_tools(self, tools: Sequence[ToolDescription]) -> DeveloperContent:
        return self.with_tools(ToolNamespaceConfig("functions", None, list(tools)))

    def with_response_format(
        self, name: str, schema: dict[str, Any], description: str | None = None
    ) -> DeveloperContent:
        """Ask for structured output: appends a `# Response Formats` block to the instructions.

        openai-harmony has no field for this; the format lives in the instruction text (as in OpenAI's cookbook),
        so the conversation keeps openai-harmony's JSON shape and renders identically there.
        """
        from gptoss.harmony.render import response_format_section

        block = response_format_section(name, schema, description)
        self.instructions = block if self.instructions is None else f"{self.instructions}\n\n{block}"
        return self

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.instructions is not None:
            out["instructions"] = self.instructions
        if self.tools is not None:
            out["tools"] = tools_to_dict(self.tools)
        out["type"] = "developer_content"
        return out


Content = TextContent | SystemContent | DeveloperContent
CONTENT_TYPES = (TextContent, SystemContent, DeveloperContent)


def as_content(content: str | Content) -> Content:
    if isinstance(content, str):
        return TextContent(content)
    if isinstance(content, CONTENT_TYPES):
        return content
    raise HarmonyError(f"content: expected str, TextContent, SystemContent or DeveloperContent, got {content!r}")


@dataclass
class Message:
    author: Author
    content: list[Content] = field(default_factory=list)
    channel: str | None = None
    recipient: str | None = None
    content_type: str | None = None

    @classmethod
    def from_author_and_content(cls, author: Author, content: str | Content) -> Message:
        return cls(author, [as_content(content)])

    @classmethod
    def from_role_and_content(cls, role: Role | str, content: str | Content) -> Message:
        return cls(Author.new(role), [as_content(content)])

    @classmethod
    def from_role_and_contents(cls, role: Role | str, contents: Iterable[str | Content]) -> Message:
        return cls(Author.new(role), [as_content(c) for c in contents])

    def adding_content(self, content: str | Content) -> Message:
        self.content.append(as_content(content))
        return self

    def with_channel(self, channel: str | None) -> Message:
        self.channel = None if channel is None else str(channel)
        return self

    def with_recipient(self, recipient: str | None) -> Message:
        self.recipient = recipient
        return self

    def with_content_type(self, content_type: str | None) -> Message:
        self.content_type = content_type
        return self

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "role": self.author.role.value,
            "name": self.author.name,
            "content": [c.to_dict() for c in self.content],
        }
        for key in ("channel", "recipient", "content_type"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: object) -> Message:
        from gptoss.harmony.wire import message_from_dict

        return message_from_dict(data, "message")


@dataclass
class Conversation:
    messages: list[Message] = field(default_factory=list)

    @classmethod
    def from_messages(cls, messages: Iterable[Message]) -> Conversation:
        items = list(messages)
        for i, m in enumerate(items):
            if not isinstance(m, Message):
                raise HarmonyError(f"messages[{i}]: expected a Message, got {type(m).__name__}")
        return cls(items)

    def to_dict(self) -> dict[str, Any]:
        return {"messages": [m.to_dict() for m in self.messages]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: object) -> Conversation:
        from gptoss.harmony.wire import conversation_from_dict

        return conversation_from_dict(data)

    @classmethod
    def from_json(cls, payload: str | bytes) -> Conversation:
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as e:
            raise HarmonyError(f"conversation JSON is not valid JSON: {e}") from e
        return cls.from_dict(data)

    def validate(self) -> None:
        """Raise HarmonyError naming the message and field if anything here cannot be rendered."""
        allowed = set(KNOWN_CHANNELS) | declared_channels(self.messages)
        for i, m in enumerate(self.messages):
            check_message(m, f"messages[{i}]", allowed)


def declared_channels(messages: Iterable[Message]) -> set[str]:
    """Channels a system message declares (a custom ChannelConfig makes its channels legal)."""
    found: set[str] = set()
    for m in messages:
        for c in m.content if isinstance(m, Message) else []:  # non-messages are reported by check_message
            if isinstance(c, SystemContent) and c.channel_config is not None:
                found.update(c.channel_config.valid_channels)
    return found


def check_message(m: Message, where: str, allowed_channels: set[str]) -> None:
    if not isinstance(m, Message):
        raise HarmonyError(f"{where}: expected a Message, got {type(m).__name__}")
    role = parse_role(m.author.role, f"{where}.role")
    if role is Role.TOOL and m.author.name is None:
        raise HarmonyError(
            f"{where}.name: Tools should have a name! (a tool message's name is the tool, e.g. 'functions.f')"
        )
    if m.channel is not None and m.channel not in allowed_channels:
        expected = ", ".join(sorted(allowed_channels))
        raise HarmonyError(f"{where}.channel: unknown channel {m.channel!r} (expected one of: {expected})")
    for j, c in enumerate(m.content):
        if not isinstance(c, CONTENT_TYPES):
            raise HarmonyError(f"{where}.content[{j}]: expected TextContent, SystemContent or DeveloperContent")
