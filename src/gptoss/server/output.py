"""Output tokens -> harmony messages (lenient parser) -> output items, incrementally, so streaming and non-streaming
agree. Each harmony message becomes one item: `analysis` -> reasoning, a recipient -> function call, anything else
-> message. Whatever the lenient parser had to repair is reported as a `Problem` (with any text that could not be
placed), so a malformed generation is flagged and never silently lost.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum

from gptoss.engine import TokenEvent
from gptoss.harmony import HarmonyEncoding, Message, RepairKind, Role, StreamableParser, StreamState, TextContent

FUNCTIONS = "functions."
BENIGN_REPAIRS = frozenset({RepairKind.CONSTRAIN_RECIPIENT})  # well-formed output openai-harmony reads oddly


class ItemKind(StrEnum):
    REASONING = "reasoning"
    MESSAGE = "message"
    FUNCTION_CALL = "function_call"


@dataclass
class OutputItem:
    kind: ItemKind
    text: str = ""  # reasoning text, message text, or function-call arguments
    name: str | None = None  # function name (the `functions.` prefix removed)
    recipient: str | None = None  # the recipient exactly as the model wrote it (function calls)
    channel: str | None = None
    tokens: int = 0  # output tokens spent on this item, its header included
    done: bool = False
    truncated: bool = False  # the output ended inside it (token budget)


@dataclass(frozen=True)
class ItemStarted:
    index: int
    item: OutputItem


@dataclass(frozen=True)
class TextDelta:
    index: int
    text: str
    event: TokenEvent | None = None  # the token that completed this text (None: text recovered afterwards)


@dataclass(frozen=True)
class ItemDone:
    index: int
    item: OutputItem


OutputEvent = ItemStarted | TextDelta | ItemDone


@dataclass(frozen=True)
class Problem:
    kind: str  # a harmony RepairKind, "unexpected_role" or "undeclared_tool"
    detail: str
    text: str = ""  # text that is in no output item


def classify(role: Role | None, channel: str | None, recipient: str | None) -> OutputItem | None:
    if role is not Role.ASSISTANT:
        return None
    if recipient is not None and recipient != "all":
        name = recipient.removeprefix(FUNCTIONS)
        return OutputItem(ItemKind.FUNCTION_CALL, name=name, recipient=recipient, channel=channel)
    if channel == "analysis":
        return OutputItem(ItemKind.REASONING, channel=channel)
    return OutputItem(ItemKind.MESSAGE, channel=channel)


def message_text(message: Message) -> str:
    return "".join(c.text for c in message.content if isinstance(c, TextContent))


@dataclass
class _Cursor:
    messages_seen: int = 0
    repairs_seen: int = 0
    open: int | None = None  # index of the item being streamed
    skipping: bool = False  # the open message is not the assistant's: collected as a problem, not an item
    pending_tokens: int = 0  # tokens fed since they were last attributed to an item


@dataclass
class OutputParser:
    """Feed generated tokens; get output events."""

    encoding: HarmonyEncoding
    declared: Collection[str] = ()  # function names the request offered
    items: list[OutputItem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._parser = StreamableParser(self.encoding, Role.ASSISTANT, strict=False)
        self._cursor = _Cursor()

    @property
    def reasoning_tokens(self) -> int:
        return sum(item.tokens for item in self.items if item.kind is ItemKind.REASONING)

    def feed(self, event: TokenEvent) -> list[OutputEvent]:
        self._parser.process(event.token)
        self._cursor.pending_tokens += 1
        out = self._close_finished(truncated=False)
        if self._parser.state is StreamState.CONTENT and self._cursor.open is None and not self._cursor.skipping:
            out += self._open_current()
        out += self._content_delta(event)
        self._collect_repairs()
        return out

    def finish(self) -> list[OutputEvent]:
        """The stream ended: close whatever is open (marked truncated unless a stop token had closed it)."""
        in_header = self._parser.state is StreamState.HEADER
        self._parser.process_eos()
        if in_header and self._ends_in_empty_message():
            self._skip_cut_header()
        out = self._close_finished(truncated=True)
        self._collect_repairs()
        return out

    def _ends_in_empty_message(self) -> bool:
        messages = self._parser.messages
        return len(messages) > self._cursor.messages_seen and not message_text(messages[-1])

    def _skip_cut_header(self) -> None:
        """Output cut off inside a header (the token budget ran out) holds no text: neither an item nor a problem."""
        self._cursor.messages_seen = len(self._parser.messages)
        self._cursor.repairs_seen = len(self._parser.repairs)

    # ---- internals ----

    def _open_current(self) -> list[OutputEvent]:
        p = self._parser
        item = classify(p.current_role, p.current_channel, p.current_recipient)
        if item is None:
            self._cursor.skipping = True
            return []
        index = self._append(item)
        self._cursor.open = index
        return [ItemStarted(index, item)]

    def _content_delta(self, event: TokenEvent) -> list[OutputEvent]:
        index, delta = self._cursor.open, self._parser.last_content_delta
        if index is None:
            return []
        self._attribute(index)
        if not delta:
            return []
        self.items[index].text += delta
        return [TextDelta(index, delta, event)]

    def _close_finished(self, truncated: bool) -> list[OutputEvent]:
        messages = self._parser.messages
        new, self._cursor.messages_seen = messages[self._cursor.messages_seen :], len(messages)
        out: list[OutputEvent] = []
        for message in new:
            if self._cursor.skipping:
                self._cursor.skipping = False
                self._unexpected_role(message)
            elif self._cursor.open is not None:
                out += self._close_open(message_text(message), truncated)
            else:
                out += self._recovered(message, truncated)
        return out

    def _close_open(self, text: str, truncated: bool) -> list[OutputEvent]:
        index = self._cursor.open
        assert index is not None
        self._cursor.open = None
        item = self.items[index]
        out: list[OutputEvent] = []
        if text.startswith(item.text) and len(text) > len(item.text):  # e.g. a held partial character flushed
            out.append(TextDelta(index, text[len(item.text) :]))
        item.text = text
        self._attribute(index)
        item.done, item.truncated = True, truncated
        return [*out, ItemDone(index, item)]

    def _recovered(self, message: Message, truncated: bool) -> list[OutputEvent]:
        """A message the parser produced without ever streaming it (a header that never reached <|message|>)."""
        item = classify(message.author.role, message.channel, message.recipient)
        if item is None:
            self._unexpected_role(message)
            return []
        index = self._append(item)
        text = message_text(message)
        item.text = text
        self._attribute(index)
        item.done, item.truncated = True, truncated
        deltas: list[OutputEvent] = [TextDelta(index, text)] if text else []
        return [ItemStarted(index, item), *deltas, ItemDone(index, item)]

    def _append(self, item: OutputItem) -> int:
        self.items.append(item)
        if item.kind is ItemKind.FUNCTION_CALL and item.name not in self.declared:
            recipient = item.name if item.name is not None else ""
            self.problems.append(Problem("undeclared_tool", f"the model called {recipient!r}, which is not in tools"))
        return len(self.items) - 1

    def _attribute(self, index: int) -> None:
        self.items[index].tokens += self._cursor.pending_tokens
        self._cursor.pending_tokens = 0

    def _unexpected_role(self, message: Message) -> None:
        role = message.author.name or message.author.role.value
        detail = f"the model wrote a message as {role!r}; only assistant messages become output"
        self.problems.append(Problem("unexpected_role", detail, message_text(message)))

    def _collect_repairs(self) -> None:
        repairs = self._parser.repairs
        for repair in repairs[self._cursor.repairs_seen :]:
            if repair.kind not in BENIGN_REPAIRS:
                text = repair.dropped.decode("utf-8", errors="replace")
                self.problems.append(Problem(repair.kind.value, repair.detail, text))
        self._cursor.repairs_seen = len(repairs)
