"""Messages -> token ids, token for token what openai-harmony 0.0.8 produces.

Every piece of text is encoded on its own with `encode_ordinary` (so `<|end|>` typed by a user stays text), and the
formatting tokens are inserted as ids. Pieces are never concatenated before encoding, because BPE across a piece
boundary could merge differently. The header order is role, name, recipient, channel, content type; a history
assistant message with a recipient ends in `<|call|>`, every other message in `<|end|>`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import tiktoken

from gptoss.harmony import tokenizer as tok
from gptoss.harmony.errors import HarmonyError
from gptoss.harmony.messages import (
    Conversation,
    DeveloperContent,
    Message,
    Role,
    SystemContent,
    TextContent,
    ToolNamespaceConfig,
)
from gptoss.harmony.schema import check_json_value, check_schema
from gptoss.harmony.typescript import to_typescript

CONSTRAIN_MARKER = "<|constrain|>"
FUNCTIONS_LINE = "\nCalls to these tools must go to the commentary channel: 'functions'."


def rust_lines(text: str) -> list[str]:
    """Rust's `str::lines()`: split on LF or CRLF, no empty line after a final LF; a CR not before LF stays."""
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    last = text.rsplit("\n", 1)[-1]
    if last:
        lines[-1] = last  # the last piece had no LF after it, so a CR ending it is not a line ending
    else:
        lines.pop()
    return lines


def namespace_section(ns: ToolNamespaceConfig) -> str:
    lines = [f"## {ns.name}\n"]
    for line in rust_lines(ns.description or ""):
        lines.append(f"// {line}" if ns.tools else line)
    if ns.tools:
        lines.append(f"namespace {ns.name} {{\n")
        for t in ns.tools:
            lines.extend(f"// {line}" for line in rust_lines(t.description))
            args = "" if t.parameters is None else "_: " + to_typescript(t.parameters)
            lines.append(f"type {t.name} = ({args}) => any;\n")
        lines.append(f"}} // namespace {ns.name}")
    return "\n".join(lines)


def tools_section(tools: dict[str, ToolNamespaceConfig]) -> str:
    """`# Tools` and one `## namespace` per entry, sorted by key (openai-harmony keeps them in a BTreeMap)."""
    return "\n\n".join(["# Tools", *(namespace_section(tools[key]) for key in sorted(tools))])


def system_text(content: SystemContent, has_function_tools: bool) -> str:
    top = [content.model_identity]
    if content.knowledge_cutoff is not None:
        top.append(f"Knowledge cutoff: {content.knowledge_cutoff}")
    if content.conversation_start_date is not None:
        top.append(f"Current date: {content.conversation_start_date}")
    sections = ["\n".join(line for line in top if line is not None)]
    if content.reasoning_effort is not None:
        sections.append(f"Reasoning: {content.reasoning_effort.value.lower()}")
    if content.tools:
        sections.append(tools_section(content.tools))
    sections.append(channels_text(content, has_function_tools))
    return "\n\n".join(s for s in sections if s)


def channels_text(content: SystemContent, has_function_tools: bool) -> str:
    config = content.channel_config
    if config is None or not config.valid_channels:
        return ""
    text = f"# Valid channels: {', '.join(config.valid_channels)}."
    if config.channel_required:
        text += " Channel must be included for every message."
    return text + FUNCTIONS_LINE if has_function_tools else text


def developer_text(content: DeveloperContent) -> str:
    sections = [] if content.instructions is None else ["# Instructions", content.instructions]
    if content.tools:
        sections.append(tools_section(content.tools))
    return "\n\n".join(sections)


def response_format_section(name: str, schema: dict[str, Any], description: str | None = None) -> str:
    """The `# Response Formats` block of OpenAI's structured-output guide: name, optional comment, compact schema."""
    check_json_value(schema, f"response format {name!r}")
    check_schema(schema, f"response format {name!r}")
    comment = "" if description is None else f"// {description}\n"
    compact = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    return f"# Response Formats\n\n## {name}\n\n{comment}{compact}"


class MessageRenderer:
    """Renders single messages with one encoding; `has_function_tools` controls the system message's last line."""

    def __init__(self, encoding: tiktoken.Encoding, has_function_tools: bool = False) -> None:
        self.encoding = encoding
        self.has_function_tools = has_function_tools

    def text(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def header(self, message: Message) -> list[int]:
        role, name = message.author.role, message.author.name
        if role is Role.TOOL:
            if name is None:
                raise HarmonyError("Tools should have a name! (a tool message's author name is the tool)")
            out = [tok.START, *self.text(name)]  # a tool's header names the tool, not the role
        else:
            out = [tok.START, *self.text(role.value)]
            if name is not None:
                out += self.text(":" + name)
        if message.recipient is not None and message.recipient != "all":
            out += self.text(" to=" + message.recipient)
        if message.channel is not None:
            out += [tok.CHANNEL, *self.text(message.channel)]
        if message.content_type is not None:
            out += self.content_type(message.content_type)
        return [*out, tok.MESSAGE]

    def content_type(self, content_type: str) -> list[int]:
        if not content_type.startswith(CONSTRAIN_MARKER):
            return self.text(" " + content_type)
        return [*self.text(" "), tok.CONSTRAIN, *self.text(content_type[len(CONSTRAIN_MARKER) :])]

    def body(self, message: Message) -> list[int]:
        out: list[int] = []
        role = message.author.role
        for item in message.content:
            if isinstance(item, TextContent):
                out += self.text(item.text)
            elif isinstance(item, SystemContent):
                if role is not Role.SYSTEM:
                    raise HarmonyError(f"SystemContent may only appear in system messages, found in {rust_name(role)}")
                out += self.text(system_text(item, self.has_function_tools))
            elif isinstance(item, DeveloperContent):
                if role is not Role.DEVELOPER:
                    raise HarmonyError(
                        f"DeveloperContent may only appear in developer messages, found in {rust_name(role)}"
                    )
                out += self.text(developer_text(item))
            else:
                raise HarmonyError(f"unsupported content item {item!r}")
        return out

    def render(self, message: Message) -> list[int]:
        end = tok.CALL if message.author.role is Role.ASSISTANT and message.recipient is not None else tok.END
        return [*self.header(message), *self.body(message), end]


def rust_name(role: Role) -> str:
    """How openai-harmony's errors spell a role (Rust's Debug of the enum variant)."""
    return role.value.capitalize()


def has_function_tools(messages: Sequence[Message]) -> bool:
    """Only a developer message's non-empty `functions` namespace triggers the system message's tool-call line."""
    for m in messages:
        for c in m.content:
            if isinstance(c, DeveloperContent) and c.tools and "functions" in c.tools and c.tools["functions"].tools:
                return True
    return False


def messages_to_render(messages: Sequence[Message], auto_drop_analysis: bool) -> Iterator[Message]:
    """openai-harmony's drop rule: when the last assistant message is `final`, drop analysis before the first final."""
    last_assistant = next((m for m in reversed(messages) if m.author.role is Role.ASSISTANT), None)
    first_final = next((i for i, m in enumerate(messages) if m.channel == "final"), None)
    drop = auto_drop_analysis and last_assistant is not None and last_assistant.channel == "final"
    for i, m in enumerate(messages):
        if drop and first_final is not None and i < first_final and m.channel == "analysis":
            continue
        yield m


def render_conversation_tokens(
    encoding: tiktoken.Encoding, conversation: Conversation, auto_drop_analysis: bool
) -> list[int]:
    conversation.validate()
    messages = conversation.messages
    renderer = MessageRenderer(encoding, has_function_tools(messages))
    out: list[int] = []
    for m in messages_to_render(messages, auto_drop_analysis):
        out += renderer.render(m)
    return out


def completion_suffix(encoding: tiktoken.Encoding, next_turn_role: Role) -> list[int]:
    return [tok.START, *encoding.encode_ordinary(next_turn_role.value)]


def training_tokens(conversation: Conversation, tokens: list[int]) -> list[int]:
    """For training, the last message's closing `<|end|>` becomes `<|return|>` when it is the final answer."""
    messages = conversation.messages
    if messages and messages[-1].author.role is Role.ASSISTANT and messages[-1].channel == "final" and tokens:
        return [*tokens[:-1], tok.RETURN]
    return tokens
