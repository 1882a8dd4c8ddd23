"""The one conversion layer every API shares: request items -> harmony conversation -> prompt tokens; output tokens
-> output items is `server.output` (re-exported here), and a finished output becomes history for the next turn.

Prompt rules (gpt-oss reference server + harmony format):
- system: model identity, knowledge cutoff, current date, reasoning effort, channel rules;
- developer (only when there is something to say): instructions (API instructions + system/developer messages,
  in order), function tools (left out for `tool_choice: none`), the response format;
- assistant text -> `final` channel (or `commentary` for a preamble); reasoning -> `analysis`; a function call ->
  `commentary to=functions.NAME <|constrain|>json`; a function result -> a tool message from `functions.NAME`.
- Reasoning from completed turns (before the last `final` answer) is dropped and reasoning in the turn still in
  progress (a tool loop) is kept. openai-harmony's own drop rule keeps stale reasoning of every turn but the first
  (vLLM #45048), so we drop here and render with its auto-drop off.
- What must be structured (a response format, tool_choice, the declared tools' argument schemas) is not put in the
  prompt: `turn_rules` states it, and the generation is constrained to it token by token (harmony.constraint).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gptoss.harmony import (
    Author,
    Conversation,
    DeveloperContent,
    HarmonyEncoding,
    HarmonyError,
    Message,
    ReasoningEffort,
    RenderConversationConfig,
    Role,
    SystemContent,
    ToolDescription,
    ToolNamespaceConfig,
)
from gptoss.harmony.constraint import SchemaError, check_schema
from gptoss.harmony.grammar import ToolCallRule, TurnRules
from gptoss.server.output import (  # noqa: F401 (the output side, re-exported: one conversion layer for callers)
    FUNCTIONS,
    ItemDone,
    ItemKind,
    ItemStarted,
    OutputEvent,
    OutputItem,
    OutputParser,
    Problem,
    TextDelta,
    classify,
    message_text,
)

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
NO_AUTO_DROP = RenderConversationConfig(auto_drop_analysis=False)


class ConversionError(ValueError):
    """A request that cannot become a harmony conversation; `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


# ---- request side ----


@dataclass(frozen=True)
class Text:
    role: Literal["user", "assistant", "system", "developer"]
    text: str
    channel: str | None = None  # assistant only: "final" (default) or "commentary" (a preamble)


@dataclass(frozen=True)
class Reasoning:
    text: str


@dataclass(frozen=True)
class FunctionCall:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class FunctionOutput:
    call_id: str
    output: str


@dataclass(frozen=True)
class BuiltinCall:
    """A call to a built-in tool (`browser.search`, `python`, ...) as the model wrote it."""

    recipient: str
    arguments: str
    channel: str = "analysis"


@dataclass(frozen=True)
class BuiltinOutput:
    """A built-in tool's reply, authored by the recipient the model called."""

    author: str
    output: str
    channel: str = "analysis"


Item = Text | Reasoning | FunctionCall | FunctionOutput | BuiltinCall | BuiltinOutput


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None
    strict: bool = False  # True: a schema keyword the engine cannot enforce is a 400 (else it is ignored)


@dataclass(frozen=True)
class ToolChoice:
    mode: Literal["auto", "none", "required", "function"] = "auto"
    name: str | None = None


@dataclass(frozen=True)
class ResponseFormat:
    name: str
    schema: dict[str, Any]
    description: str | None = None
    strict: bool = False


@dataclass(frozen=True)
class PromptSpec:
    items: tuple[Item, ...]
    instructions: str | None = None
    tools: tuple[FunctionTool, ...] = ()
    tool_choice: ToolChoice = ToolChoice()
    effort: ReasoningEffort = ReasoningEffort.MEDIUM
    response_format: ResponseFormat | None = None
    date: str | None = None  # YYYY-MM-DD
    items_param: str = "input"  # the request field the items came from, for error messages
    builtin: tuple[ToolNamespaceConfig, ...] = ()  # built-in tool sections (browser, python) for the system message
    tools_param: str = "tools[{i}].parameters"  # the request fields of the schemas, for error messages
    format_param: str = "response_format"


@dataclass(frozen=True)
class Prompt:
    tokens: list[int]  # everything the model sees; it ends with `<|start|>assistant`
    rules: TurnRules  # what the assistant turn must look like (`rules.constrained`: a grammar enforces it)


def render_prompt(spec: PromptSpec, encoding: HarmonyEncoding) -> Prompt:
    check_tools(spec)
    conversation = build_conversation(spec)  # harmony's own schema checks first: their messages are the plainest
    check_schemas(spec)
    tokens = encoding.render_conversation_for_completion(conversation, Role.ASSISTANT, NO_AUTO_DROP)
    return Prompt(tokens, turn_rules(spec))


def check_schemas(spec: PromptSpec) -> None:
    """400 for an invalid schema, or a strict one using a keyword the grammar engine cannot enforce."""
    try:
        for i, tool in enumerate(spec.tools):
            if tool.parameters is not None:
                check_schema(tool.parameters, tool.strict, spec.tools_param.format(i=i))
        if spec.response_format is not None:
            check_schema(spec.response_format.schema, spec.response_format.strict, spec.format_param)
    except SchemaError as e:
        raise ConversionError(str(e), e.param) from None


def turn_rules(spec: PromptSpec) -> TurnRules:
    """The request's structure as grammar rules: function calls with their argument schemas, the built-in tools'
    calls, tool_choice, and the final message's JSON Schema."""
    calls = [
        ToolCallRule(FUNCTIONS + t.name, t.parameters if t.parameters is not None else {"type": "object"}, t.strict)
        for t in spec.tools
    ]
    # built-in tools, also under `functions.` (gpt-oss's habit, which the tool loop routes to the built-in) unless
    # a user function has that name
    user = {t.name for t in spec.tools}
    for namespace in spec.builtin:
        targets: list[tuple[str, dict[str, Any] | None]] = []
        if not namespace.tools:  # python: the code is free text
            targets.append((namespace.name, None))
        targets += [(f"{namespace.name}.{tool.name}", tool.parameters) for tool in namespace.tools]
        for name, schema in targets:
            aliases = [name] + ([FUNCTIONS + name] if name not in user else [])
            calls += [ToolCallRule(alias, schema, strict=False, builtin=True) for alias in aliases]
    fmt = spec.response_format
    return TurnRules(
        calls=tuple(calls),
        choice=spec.tool_choice.mode,
        function=spec.tool_choice.name,
        final_schema=fmt.schema if fmt is not None else None,
        final_strict=fmt.strict if fmt is not None else True,
    )


def check_tools(spec: PromptSpec) -> None:
    seen: set[str] = set()
    for i, tool in enumerate(spec.tools):
        if not TOOL_NAME.match(tool.name):
            raise ConversionError(
                f"invalid function name {tool.name!r}: use 1-64 letters, digits, '_' or '-'", f"tools[{i}].name"
            )
        if tool.name in seen:
            raise ConversionError(f"duplicate function name {tool.name!r}", f"tools[{i}].name")
        seen.add(tool.name)
    choice = spec.tool_choice
    if choice.mode in ("required", "function") and not spec.tools:
        raise ConversionError(f"tool_choice {choice.mode!r} needs at least one function in tools", "tool_choice")
    if choice.mode == "function" and choice.name not in seen:
        raise ConversionError(f"tool_choice names function {choice.name!r}, which is not in tools", "tool_choice")


def build_conversation(spec: PromptSpec) -> Conversation:
    instructions = gather_instructions(spec)
    items = drop_completed_reasoning([i for i in spec.items if not is_instruction(i)])
    names = call_names(items, spec.items_param)
    messages = [system_message(spec), *developer_message(spec, instructions)]
    messages += [to_message(item, names) for item in items]
    return Conversation.from_messages(messages)


def is_instruction(item: Item) -> bool:
    return isinstance(item, Text) and item.role in ("system", "developer")


def gather_instructions(spec: PromptSpec) -> str | None:
    parts = [spec.instructions] if spec.instructions else []
    parts += [i.text for i in spec.items if isinstance(i, Text) and is_instruction(i) and i.text]
    return "\n\n".join(parts) if parts else None


def is_final_answer(item: Item) -> bool:
    return isinstance(item, Text) and item.role == "assistant" and (item.channel or "final") == "final"


def is_chain_of_thought(item: Item) -> bool:
    """Reasoning, and built-in tool calls and replies on the analysis channel."""
    if isinstance(item, BuiltinCall | BuiltinOutput):
        return item.channel == "analysis"
    return isinstance(item, Reasoning)


def drop_completed_reasoning(items: list[Item]) -> list[Item]:
    last_final = max((i for i, item in enumerate(items) if is_final_answer(item)), default=-1)
    return [item for i, item in enumerate(items) if i > last_final or not is_chain_of_thought(item)]


def call_names(items: Sequence[Item], where: str) -> dict[str, str]:
    """call_id -> function name; every function output must answer a call made earlier."""
    names: dict[str, str] = {}
    for item in items:
        if isinstance(item, FunctionCall):
            names[item.call_id] = item.name
        elif isinstance(item, FunctionOutput) and item.call_id not in names:
            raise ConversionError(f"no function call with call_id {item.call_id!r} precedes its output", where)
    return names


def system_message(spec: PromptSpec) -> Message:
    content = SystemContent.new().with_reasoning_effort(spec.effort)
    if spec.date:
        content = content.with_conversation_start_date(spec.date)
    for namespace in spec.builtin:
        content = content.with_tools(namespace)
    return Message.from_role_and_content(Role.SYSTEM, content)


def developer_message(spec: PromptSpec, instructions: str | None) -> list[Message]:
    tools = spec.tools if spec.tool_choice.mode != "none" else ()
    if instructions is None and not tools and spec.response_format is None:
        return []
    content = DeveloperContent.new()
    if instructions is not None:
        content = content.with_instructions(instructions)
    if tools:
        content = content.with_function_tools(
            [tool_description(t, spec.tools_param.format(i=i)) for i, t in enumerate(tools)]
        )
    if spec.response_format is not None:
        content = add_response_format(content, spec.response_format, spec.format_param)
    return [Message.from_role_and_content(Role.DEVELOPER, content)]


def tool_description(tool: FunctionTool, param: str) -> ToolDescription:
    try:
        return ToolDescription.new(tool.name, tool.description, tool.parameters)
    except HarmonyError as e:
        raise ConversionError(f"invalid JSON Schema: {e}", param) from None


def add_response_format(content: DeveloperContent, fmt: ResponseFormat, param: str) -> DeveloperContent:
    try:
        return content.with_response_format(fmt.name, fmt.schema, fmt.description)
    except HarmonyError as e:
        raise ConversionError(f"invalid JSON Schema: {e}", param) from None


def to_message(item: Item, names: dict[str, str]) -> Message:
    if isinstance(item, Text) and item.role == "user":
        return Message.from_role_and_content(Role.USER, item.text)
    if isinstance(item, Text):
        return Message.from_role_and_content(Role.ASSISTANT, item.text).with_channel(item.channel or "final")
    if isinstance(item, Reasoning):
        return Message.from_role_and_content(Role.ASSISTANT, item.text).with_channel("analysis")
    if isinstance(item, FunctionCall):
        message = Message.from_role_and_content(Role.ASSISTANT, item.arguments).with_channel("commentary")
        return message.with_recipient(FUNCTIONS + item.name).with_content_type("<|constrain|>json")
    if isinstance(item, BuiltinCall):
        message = Message.from_role_and_content(Role.ASSISTANT, item.arguments).with_channel(item.channel)
        return message.with_recipient(item.recipient)
    if isinstance(item, BuiltinOutput):
        tool = Message.from_author_and_content(Author.new(Role.TOOL, item.author), item.output)
        return tool.with_channel(item.channel).with_recipient("assistant")
    author = Author.new(Role.TOOL, FUNCTIONS + names[item.call_id])
    return Message.from_author_and_content(author, item.output).with_channel("commentary").with_recipient("assistant")


# ---- history (what a stored response contributes to a follow-up request) ----


def item_to_dict(item: Item) -> dict[str, Any]:
    kind = {
        Text: "text",
        Reasoning: "reasoning",
        FunctionCall: "function_call",
        FunctionOutput: "function_output",
        BuiltinCall: "builtin_call",
        BuiltinOutput: "builtin_output",
    }
    return {"kind": kind[type(item)], **item.__dict__}


def item_from_dict(data: dict[str, Any]) -> Item:
    fields = {k: v for k, v in data.items() if k != "kind"}
    kinds: dict[str, type[Item]] = {
        "text": Text,
        "reasoning": Reasoning,
        "function_call": FunctionCall,
        "function_output": FunctionOutput,
        "builtin_call": BuiltinCall,
        "builtin_output": BuiltinOutput,
    }
    return kinds[data["kind"]](**fields)


def output_to_history(items: Sequence[OutputItem], call_ids: Sequence[str | None]) -> list[Item]:
    """Output items as input items of the next turn; `call_ids[i]` is the id given to function call i."""
    history: list[Item] = []
    for item, call_id in zip(items, call_ids, strict=True):
        if item.kind is ItemKind.REASONING:
            history.append(Reasoning(item.text))
        elif item.kind is ItemKind.FUNCTION_CALL:
            history.append(FunctionCall(call_id or "", item.name or "", item.text))
        else:
            channel = "commentary" if item.channel == "commentary" else "final"
            history.append(Text("assistant", item.text, channel))
    return history
