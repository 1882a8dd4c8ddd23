"""Training data: JSONL conversations -> harmony training renders -> (tokens, loss mask).

Each line is one conversation, either in the OpenAI chat format (`messages` with `role` system / developer / user /
assistant / tool; assistant `content`, `thinking` or `reasoning_content`, `tool_calls`; tool `tool_call_id`; optional
top-level `tools`, `reasoning_effort` and `date`, the conversation start date the server writes into its system
message) or a harmony conversation (`Conversation.to_json()`: recognised by a
`channel`, `recipient` or `content_type` key on a message, or a `system_content` / `developer_content` part).

Chat lines go through the server's own conversion (gptoss.server.conversation), so a model is trained on exactly
the prompt layout it is served with: a system message (reasoning effort), a developer message when there are
instructions or tools, and reasoning of completed turns dropped (the last turn, after the last user message, keeps
its analysis: it is what the model generates).

The loss mask is 1 on exactly the tokens the model generates at inference: every assistant message's tokens from
its header (`<|channel|>...`) through its closing `<|end|>` / `<|call|>` / `<|return|>`; the `<|start|>assistant`
that opens an assistant message is generated too (and so trained) when it follows another assistant message, and
is prompt otherwise. Everything else (system, developer, user and tool messages) is masked out.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptoss.errors import InputError
from gptoss.harmony import (
    Conversation,
    HarmonyEncoding,
    HarmonyError,
    Message,
    ReasoningEffort,
    RenderOptions,
    Role,
)
from gptoss.harmony.render import has_function_tools
from gptoss.harmony.tokenizer import START
from gptoss.server import conversation as conv

CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")
HARMONY_PARTS = ("system_content", "developer_content")


class DataError(InputError):
    """A training line that cannot become a conversation; the message names the file, line and reason."""


@dataclass(frozen=True)
class Example:
    tokens: list[int]
    mask: list[int]  # 1 where the token is trained (an assistant token), 0 elsewhere
    line: int  # 1-based line in the source file


@dataclass(frozen=True)
class Dataset:
    examples: list[Example]
    problems: list[str]  # "FILE:LINE: reason" for each skipped line


def load_jsonl(path: str | Path, encoding: HarmonyEncoding, max_length: int, strict: bool = False) -> Dataset:
    """Reads every conversation of a JSONL file. Bad lines are collected (or raised with `strict`)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot read training data: {e}") from None
    examples, problems = [], []
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            tokens, mask = encode_line(raw, encoding, max_length)
            examples.append(Example(tokens, mask, n))
        except DataError as e:
            if strict:
                raise DataError(f"{p}:{n}: {e}") from None
            problems.append(f"{p}:{n}: {e}")
    if not examples:
        detail = f" ({len(problems)} bad line(s); first: {problems[0]})" if problems else ""
        raise DataError(f"{p}: no usable conversations{detail}")
    return Dataset(examples, problems)


def encode_line(raw: str, encoding: HarmonyEncoding, max_length: int) -> tuple[list[int], list[int]]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    conversation, weights = parse_weighted(data)
    tokens, mask = render_with_mask(conversation, encoding, weights)
    if len(tokens) > max_length:
        raise DataError(f"conversation is {len(tokens)} tokens, longer than the limit of {max_length} (--max-length)")
    if not any(mask):
        raise DataError("no assistant message to train on")
    return tokens, mask


def parse_conversation(data: Any) -> Conversation:
    return parse_weighted(data)[0]


def parse_weighted(data: Any) -> tuple[Conversation, list[int]]:
    """The conversation and each of its messages' weight: 0 for an assistant message marked `"weight": 0` (OpenAI's
    fine-tuning format: context the model is not trained to write, e.g. earlier turns), else 1."""
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list) or not data["messages"]:
        raise DataError('expected an object with a non-empty "messages" list')
    raw = data["messages"]
    weights = [message_weight(m, f"messages[{i}]") for i, m in enumerate(raw)]
    try:
        if is_harmony(raw):
            conversation = Conversation.from_dict(data)
            conversation.validate()
            return conversation, weights
        spec, context = weighted_chat_spec(data, weights)
        return weighted_training_conversation(spec, context)
    except (HarmonyError, conv.ConversionError) as e:
        raise DataError(str(e)) from None


def message_weight(m: Any, where: str) -> int:
    if not isinstance(m, dict) or "weight" not in m:
        return 1
    if m["weight"] not in (0, 1) or isinstance(m["weight"], bool):
        raise DataError(f"{where}.weight must be 0 or 1, got {m['weight']!r}")
    if m.get("role") != "assistant":
        raise DataError(f"{where}.weight: only assistant messages are trained, so only they take a weight")
    return int(m["weight"])


def training_conversation(spec: conv.PromptSpec) -> Conversation:
    """conv.build_conversation, except that the last turn (after the last user message) keeps its reasoning: the
    prompt is what the server would send before that turn, and the turn is what the model should generate."""
    return weighted_training_conversation(spec, frozenset())[0]


def weighted_training_conversation(spec: conv.PromptSpec, context: Collection[int]) -> tuple[Conversation, list[int]]:
    """training_conversation and each message's weight: 0 for the messages of the items whose id() is in
    `context`, else 1 (system and developer messages included)."""
    items = [i for i in spec.items if not conv.is_instruction(i)]
    last_user = max((n for n, i in enumerate(items) if isinstance(i, conv.Text) and i.role == "user"), default=-1)
    items = conv.drop_completed_reasoning(items[: last_user + 1]) + items[last_user + 1 :]
    names = conv.call_names(items, spec.items_param)
    messages = [conv.system_message(spec), *conv.developer_message(spec, conv.gather_instructions(spec))]
    weights = [1] * len(messages) + [0 if id(i) in context else 1 for i in items]
    return Conversation.from_messages(messages + [conv.to_message(i, names) for i in items]), weights


def is_harmony(messages: list[Any]) -> bool:
    for m in messages:
        if not isinstance(m, dict):
            continue
        if any(k in m for k in ("channel", "recipient", "content_type")):
            return True
        parts = m.get("content")
        if isinstance(parts, list) and any(isinstance(c, dict) and c.get("type") in HARMONY_PARTS for c in parts):
            return True
    return False


def weighted_chat_spec(data: dict[str, Any], weights: Sequence[int]) -> tuple[conv.PromptSpec, set[int]]:
    """The spec of a chat line and the id()s of the items of its messages weighted 0."""
    items: list[conv.Item] = []
    context: set[int] = set()
    for i, (m, weight) in enumerate(zip(data["messages"], weights, strict=True)):
        made = chat_items(m, f"messages[{i}]")
        context |= set() if weight else {id(item) for item in made}
        items += made
    effort = data.get("reasoning_effort", "medium")
    if effort not in ("low", "medium", "high"):
        raise DataError(f"reasoning_effort {effort!r}: expected 'low', 'medium' or 'high'")
    tools = tuple(function_tool(t, f"tools[{i}]") for i, t in enumerate(data.get("tools") or []))
    date = data.get("date")
    if date is not None and not isinstance(date, str):
        raise DataError(f"date must be a 'YYYY-MM-DD' string, got {date!r}")
    level = ReasoningEffort(effort.capitalize())
    spec = conv.PromptSpec(tuple(items), tools=tools, effort=level, date=date, items_param="messages")
    conv.check_tools(spec)
    return spec, context


def chat_items(m: Any, where: str) -> list[conv.Item]:
    if not isinstance(m, dict):
        raise DataError(f"{where}: expected an object, got {type(m).__name__}")
    role = m.get("role")
    if role not in CHAT_ROLES:
        raise DataError(f"{where}: unknown role {role!r} (expected one of {', '.join(CHAT_ROLES)})")
    text = content_text(m.get("content"), where)
    if role == "tool":
        call_id = m.get("tool_call_id")
        if not isinstance(call_id, str):
            raise DataError(f"{where}: a tool message needs a string 'tool_call_id'")
        return [conv.FunctionOutput(call_id, text)]
    if role != "assistant":
        return [conv.Text(role, text)]
    return assistant_items(m, text, where)


def assistant_items(m: dict[str, Any], text: str, where: str) -> list[conv.Item]:
    items: list[conv.Item] = []
    thinking = m.get("thinking", m.get("reasoning_content"))
    if thinking:
        items.append(conv.Reasoning(content_text(thinking, where)))
    calls = m.get("tool_calls") or []
    if text:
        items.append(conv.Text("assistant", text, "commentary" if calls else "final"))
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise DataError(f"{where}.tool_calls[{j}]: expected {{'id', 'function': {{'name', 'arguments'}}}}")
        args = fn.get("arguments", "{}")
        args = args if isinstance(args, str) else json.dumps(args)
        items.append(conv.FunctionCall(str(call.get("id", f"call_{j}")), fn["name"], args))
    if not items:
        raise DataError(f"{where}: an assistant message needs content, thinking or tool_calls")
    return items


def content_text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(isinstance(c, dict) and isinstance(c.get("text"), str) for c in content):
        return "".join(c["text"] for c in content)
    raise DataError(f"{where}: content must be a string or a list of {{'type': 'text', 'text': ...}} parts")


def function_tool(t: Any, where: str) -> conv.FunctionTool:
    fn = t.get("function", t) if isinstance(t, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise DataError(f"{where}: expected a function tool with a 'name'")
    return conv.FunctionTool(fn["name"], fn.get("description") or "", fn.get("parameters"))


def render_with_mask(
    conversation: Conversation, encoding: HarmonyEncoding, weights: Sequence[int] | None = None
) -> tuple[list[int], list[int]]:
    """The training render and its loss mask, built message by message (the render is their concatenation);
    `weights` (one per message) zero the mask of the messages marked 0."""
    tokens = encoding.render_conversation_for_training(conversation, conv.NO_AUTO_DROP)
    messages = conversation.messages
    options = RenderOptions(conversation_has_function_tools=has_function_tools(messages))
    mask: list[int] = []
    for i, m in enumerate(messages):
        n = len(encoding.render(m, options))
        trained = weights is None or weights[i]
        mask += message_mask(m, n, i > 0 and is_assistant(messages[i - 1]), encoding) if trained else [0] * n
    if len(mask) != len(tokens):  # the render must be the per-message concatenation; anything else is a bug here
        raise AssertionError(f"training render has {len(tokens)} tokens, its messages {len(mask)}")
    return tokens, mask


def message_mask(m: Message, n: int, after_assistant: bool, encoding: HarmonyEncoding) -> list[int]:
    if not is_assistant(m):
        return [0] * n
    opener = 0 if after_assistant else 1 + len(encoding.encode(m.author.role.value, allowed_special=set()))
    return [0] * opener + [1] * (n - opener)


def is_assistant(m: Message) -> bool:
    return m.author.role is Role.ASSISTANT


def message_spans(tokens: Sequence[int]) -> Iterator[tuple[int, int]]:
    """(start, end) of each `<|start|>`-opened message in a render (used by tests and tools)."""
    starts = [i for i, t in enumerate(tokens) if t == START] + [len(tokens)]
    yield from itertools.pairwise(starts)
