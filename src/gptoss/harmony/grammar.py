"""The assistant turn as a grammar: what a constrained generation may write after `<|start|>assistant`.

One Lark grammar (llguidance's dialect, special tokens as `<|name|>`) covers the whole turn: free reasoning
(`analysis`, and `commentary` preambles when a call may follow), then the part the client asked to be structured:
a `final` message whose content is the response format's JSON, or a call whose recipient is one of the declared
tools and whose arguments match that tool's schema. Headers are written in the form the model generates
(channel first: `<|channel|>commentary to=functions.f <|constrain|>json<|message|>`). JSON is compact (no free
whitespace), so a constrained value always makes progress.

Three variants of one turn: `FULL` (reasoning, then the ending), `CLOSING` (the reasoning budget ran out inside a
free message: close it, then the ending) and `DIRECT` (no reasoning at all).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

Choice = Literal["auto", "none", "required", "function"]


@dataclass(frozen=True)
class ToolCallRule:
    """A recipient the model may call: `functions.NAME` with JSON arguments, or a built-in tool."""

    recipient: str  # "functions.get_weather", "browser.search", "python"
    schema: dict[str, Any] | None = None  # None: free text (python code)
    strict: bool = True  # False: keywords llguidance cannot enforce are ignored instead of refused
    builtin: bool = False


@dataclass(frozen=True)
class TurnRules:
    """What the assistant turn must look like."""

    calls: tuple[ToolCallRule, ...] = ()
    choice: Choice = "auto"
    function: str | None = None  # the forced function's name when choice == "function"
    final_schema: dict[str, Any] | None = None  # the final message's JSON Schema (json_object: {"type": "object"})
    final_strict: bool = True
    callable: tuple[ToolCallRule, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        if self.choice == "none":
            allowed: tuple[ToolCallRule, ...] = ()
        elif self.choice == "function":
            allowed = tuple(c for c in self.calls if c.recipient == f"functions.{self.function}")
        else:
            allowed = self.calls
        object.__setattr__(self, "callable", allowed)

    @property
    def constrained(self) -> bool:
        """False when nothing is enforced (free text, no tools): the turn needs no grammar."""
        return self.final_schema is not None or self.choice != "auto" or bool(self.calls)

    @property
    def final_allowed(self) -> bool:
        return self.choice in ("auto", "none")


class Variant(StrEnum):
    FULL = "full"
    CLOSING = "closing"
    DIRECT = "direct"


def json_options(strict: bool) -> JsonCompileOptions:
    """llguidance's JSON compiler options: compact output; `lenient` ignores keywords it cannot enforce."""
    return {"whitespace_flexible": False, "lenient": not strict}


def json_rule(schema: dict[str, Any], strict: bool) -> str:
    guided = {**schema, "x-guidance": json_options(strict)}
    return "%json " + json.dumps(guided, ensure_ascii=False)


def lark(rules: TurnRules, variant: Variant) -> str:
    """The Lark grammar of one turn."""
    endings, defs = [], []
    if rules.final_allowed:
        endings.append("final")
        body = "final_json" if rules.final_schema is not None else "FREE"
        defs.append(f'final: <|channel|> "final" <|message|> {body} <|return|>')
        if rules.final_schema is not None:
            defs.append(f"final_json: {json_rule(rules.final_schema, rules.final_strict)}")
    for i, call in enumerate(rules.callable):
        endings.append(f"call{i}")
        defs += call_rules(i, call)
    preludes = ["analysis", "preamble"] if rules.callable else ["analysis"]
    start = {
        Variant.FULL: "start: prelude* ending",
        Variant.CLOSING: 'start: <|end|> <|start|> "assistant" ending',
        Variant.DIRECT: "start: ending",
    }[variant]
    lines = [
        start,
        "prelude: " + " | ".join(preludes),
        'analysis: <|channel|> "analysis" <|message|> FREE <|end|> <|start|> "assistant"',
        'preamble: <|channel|> "commentary" <|message|> FREE <|end|> <|start|> "assistant"',
        "ending: " + " | ".join(endings),
        *defs,
        "FREE: /(?s:.*)/",  # any text; special tokens never match a regex, so only the grammar's own can follow
    ]
    return "\n".join(lines) + "\n"


def call_rules(i: int, call: ToolCallRule) -> list[str]:
    """A call in either header order: `<|channel|>commentary to=R` (what gpt-oss generates) or `to=R<|channel|>...`
    (how the renderer writes calls into history, which the model may echo)."""
    to = f'" to={call.recipient}"'
    if not call.builtin:  # function calls: commentary, JSON arguments
        channel, suffix = '"commentary"', '" " <|constrain|> "json"'
    else:  # built-in tools: analysis or commentary; ` code` or ` <|constrain|>json` may follow
        channel, suffix = '("analysis" | "commentary")', '(" code" | " " <|constrain|> "json")?'
    header = f"(<|channel|> {channel} {to} | {to} <|channel|> {channel}) {suffix}"
    if call.schema is None:
        return [f"call{i}: {header} <|message|> FREE <|call|>"]
    return [f"call{i}: {header} <|message|> args{i} <|call|>", f"args{i}: {json_rule(call.schema, call.strict)}"]
