"""What `gptoss chat` shows while a turn is generated: the reasoning (dimmed, collapsing when the answer starts), the
answer as Markdown, function calls, built-in tool steps, and a spinner with tokens/s."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import RenderableType

    from gptoss.server import conversation as conv
    from gptoss.tools import BuiltinTools, ToolStep

SHOWN_RESULT = 300  # characters of a tool's result shown in the chat


def tool_summary(step: ToolStep) -> str:
    """A short dimmed line for an executed built-in tool call: the call, then the start of its result."""
    if step.tool == "python":
        call = "python: " + " ⏎ ".join(line for line in str(step.arguments.get("code", "")).splitlines() if line)
    else:
        call = f"browser.{step.function}({', '.join(f'{k}={v!r}' for k, v in step.arguments.items())})"
    result = " ".join(step.output.split())
    if len(result) > SHOWN_RESULT:
        result = result[:SHOWN_RESULT] + "…"
    return f"⚙ {call}\n  ↳ {result}"


@dataclass
class TurnView:
    """What one model turn looks like on screen, rebuilt from the output events as they arrive."""

    reasoning: str = ""
    reasoning_tokens: int = 0
    answering: bool = False  # once anything but reasoning has started, the reasoning collapses
    answer: str = ""
    calls: list[str] = field(default_factory=list)
    kinds: dict[int, str] = field(default_factory=dict)  # output item index -> its kind
    builtin: BuiltinTools | None = None  # its calls are shown when they run; its citations become links

    def apply(self, event: conv.OutputEvent) -> None:
        from gptoss.server.conversation import ItemDone, ItemStarted

        if isinstance(event, ItemStarted):
            self.kinds[event.index] = event.item.kind.value
            self.answering = self.answering or event.item.kind.value != "reasoning"
        elif isinstance(event, ItemDone):
            self.finished(event.item)
        elif self.kinds.get(event.index) == "reasoning":
            self.reasoning += event.text
        elif self.kinds.get(event.index) == "message":
            self.answer += event.text

    def finished(self, item: conv.OutputItem) -> None:
        if item.kind.value == "reasoning":
            self.reasoning_tokens += item.tokens
        elif item.kind.value == "function_call":
            from gptoss.server.builtin import builtin_kind

            if builtin_kind(self.builtin, item) is None:
                self.calls.append(f"→ {item.name}({item.text})")

    def cited(self, text: str) -> str:
        """With a browser, citations of opened pages as markdown links (an unfinished one is held back)."""
        if self.builtin is None or self.builtin.browser is None:
            return text
        from gptoss.tools import split_pending

        safe, _ = split_pending(text)
        return self.builtin.cite(safe)[0]

    def render(self) -> RenderableType:
        from rich.console import Group
        from rich.markdown import Markdown
        from rich.text import Text

        parts: list[RenderableType] = []
        if self.reasoning and not self.answering:
            parts.append(Text(self.reasoning, style="dim italic"))
        elif self.reasoning:
            parts.append(Text(f"▸ reasoning: {self.reasoning_tokens} tokens (/reasoning to show)", style="dim"))
        if self.answer:
            parts.append(Markdown(self.cited(self.answer)))
        parts += [Text(call, style="cyan") for call in self.calls]
        return Group(*parts)


@dataclass
class Rate:
    """Tokens and tokens/s of the turn being generated, shown under it with a spinner."""

    tokens: int = 0
    start: float = field(default_factory=time.monotonic)
    first: float | None = None  # when the first token came (the prompt was read by then)

    def tick(self) -> None:
        self.tokens += 1
        self.first = self.first or time.monotonic()

    def per_second(self) -> float:
        span = time.monotonic() - self.first if self.first is not None else 0.0
        return (self.tokens - 1) / span if self.tokens > 1 and span > 0 else 0.0

    def summary(self) -> str:
        return f"{self.tokens} tokens, {self.per_second():.1f} tokens/s, {time.monotonic() - self.start:.1f} s"

    def below(self, view: RenderableType) -> RenderableType:
        from rich.console import Group
        from rich.spinner import Spinner

        status = f"{self.summary()} · Ctrl-C stops" if self.tokens else "reading the prompt… · Ctrl-C stops"
        return Group(view, Spinner("dots", text=status, style="dim"))
