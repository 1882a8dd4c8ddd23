"""`gptoss chat`: a terminal chat with a checkpoint, through the same conversion layer as the server.

Reasoning streams dimmed and collapses to one line when the answer starts (`/reasoning` shows it again); the answer
is rendered as Markdown. Function tools declared with `--functions FILE.json` are answered by the user: when the
model calls one, the chat asks for its result and lets the model continue. Built-in tools (`--browser DIR`,
`--python`) run inside the loop: the call and a short result are shown dimmed and the model goes on. `--raw` shows
the harmony tokens instead.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptoss.cli.__main__ import UserError
from gptoss.cli.chat_view import Rate, TurnView, tool_summary
from gptoss.cli.serve import EFFORTS, add_model_arguments

if TYPE_CHECKING:
    from rich.console import Console

    from gptoss.engine import TokenSource
    from gptoss.harmony import HarmonyEncoding
    from gptoss.server import conversation as conv
    from gptoss.tools import BuiltinTools

HELP = "chat with a checkpoint in the terminal (reasoning shown dimmed, function calls answered by you)"
COMMANDS_HELP = (
    "/help shows this and the limits, /reasoning shows the last reasoning, /clear starts over, /quit (or Ctrl-D) "
    "leaves; Ctrl-C stops an answer"
)
DEFAULT_MAX_TOKENS = 2048  # per model turn: bounds the wait, and leaves room for history in a small context


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--reasoning-effort", choices=EFFORTS, default="low")
    p.add_argument("--developer-message", default=None, help="instructions for the model (the developer message)")
    p.add_argument("--functions", type=Path, default=None, help="JSON file: a list of function tools you will answer")
    p.add_argument(
        "--schema",
        type=Path,
        default=None,
        metavar="FILE.json",
        help="JSON Schema every answer must match (the final message is constrained to it)",
    )
    p.add_argument(
        "--max-reasoning-tokens",
        type=int,
        default=None,
        metavar="N",
        help="free reasoning before a constrained answer must start (default: half of --max-tokens, at most 2048)",
    )
    p.add_argument("--raw", action="store_true", help="show the harmony tokens instead of formatted output")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                   help="output tokens per model turn (reasoning included); old turns make room")  # fmt: skip
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--browser", type=Path, default=None, metavar="DIR",
                   help="enable the browser tool over an offline index of DIR's documents")  # fmt: skip
    p.add_argument("--python", action="store_true", help="enable the sandboxed python tool (needs bubblewrap)")


def read_functions(path: Path | None) -> tuple[conv.FunctionTool, ...]:
    """A JSON list of tools, each in Chat Completions form ({type, function: {...}}), Responses form
    ({type, name, ...}) or bare ({name, description, parameters})."""
    from gptoss.server.conversation import FunctionTool

    if path is None:
        return ()
    data = read_json(path, "--functions")
    if not isinstance(data, list):
        raise UserError(f"--functions {path}: expected a JSON list of function tools")
    tools = []
    for i, entry in enumerate(data):
        spec = entry.get("function", entry) if isinstance(entry, dict) else None
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise UserError(f"--functions {path}: entry {i} has no function name")
        tools.append(FunctionTool(spec["name"], str(spec.get("description", "")), spec.get("parameters")))
    return tuple(tools)


@dataclass
class ChatOptions:
    effort: str = "low"
    developer: str | None = None
    tools: tuple[conv.FunctionTool, ...] = ()
    raw: bool = False
    temperature: float = 1.0
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int | None = None
    builtin: BuiltinTools | None = None  # built-in tools run in the loop (None: none)
    schema: dict[str, Any] | None = None  # --schema: the final answer's JSON Schema
    max_reasoning_tokens: int | None = None


class ChatSession:
    def __init__(
        self,
        source: TokenSource,
        encoding: HarmonyEncoding,
        options: ChatOptions,
        console: Console,
        ask: Callable[[str], str],
    ) -> None:
        self.source, self.encoding, self.options, self.console, self.ask = source, encoding, options, console, ask
        self.items: list[conv.Item] = []
        self.last_reasoning = ""
        self.calls_made = 0
        self.interrupted = False  # Ctrl-C stopped the last generation

    def loop(self) -> None:
        self.console.print(f"[dim]{COMMANDS_HELP}[/]")
        while True:
            try:
                text = self.ask(">>> ").strip()
            except EOFError:
                self.console.print()  # leave the shell's prompt on a line of its own
                return
            except KeyboardInterrupt:
                self.console.print("\n[dim](Ctrl-D or /quit leaves)[/]", highlight=False)
                continue
            if not text:
                continue
            if text in ("/quit", "/exit"):
                return
            if text.startswith("/"):
                self.command(text)
            else:
                self.turn(text)

    def command(self, text: str) -> None:
        if text == "/help":
            self.show_help()
        elif text == "/reasoning":
            self.console.print(self.last_reasoning or "(no reasoning yet)", style="dim italic", markup=False)
        elif text == "/clear":
            self.items = []
            if self.options.builtin is not None:
                self.options.builtin.reset_python()
            self.console.print("[dim](conversation cleared)[/]")
        else:
            self.console.print(f"[red]unknown command {text!r}[/]: {COMMANDS_HELP}")

    def show_help(self) -> None:
        from gptoss.cli.chat_history import turn_starts
        from gptoss.server.conversation import render_prompt

        used = len(render_prompt(self.spec(), self.encoding).tokens)
        context, turns = self.source.context_length, len(turn_starts(self.items))
        self.console.print(
            f"[dim]{COMMANDS_HELP}\nper-turn limit: {self.options.max_tokens} tokens (--max-tokens); context: "
            f"{context} tokens; conversation: {turns} turn(s), {used} tokens (the oldest turns are dropped when it "
            "no longer fits)[/]",
            highlight=False,
        )

    def turn(self, text: str) -> None:
        """One user message, then model turns until the model stops calling functions (or Ctrl-C stops it)."""
        from gptoss.errors import InputError
        from gptoss.server.conversation import ConversionError, Text

        saved = list(self.items)
        self.items.append(Text("user", text))
        try:
            while self.model_turn():
                pass
        except (InputError, ConversionError, ValueError) as e:
            self.items = saved
            self.console.print(f"[red]error: {e}[/]")
        except KeyboardInterrupt:  # at a function-result prompt: that turn is dropped, the rest is kept
            self.items = saved
            self.console.print("\n[yellow](stopped; that message was dropped)[/]", highlight=False)

    def model_turn(self) -> bool:
        """Generates once; runs the built-in tool call it ended on, or asks for the results of the function calls
        it made. True when the model should go on."""
        from gptoss.server import conversation as conv
        from gptoss.server.builtin import builtin_kind

        outputs = self.generate()
        self.last_reasoning = "\n".join(o.text for o in outputs if o.kind is conv.ItemKind.REASONING)
        if self.interrupted:  # keep what was said, run nothing it was about to call
            kept = [o for o in outputs if o.kind is not conv.ItemKind.FUNCTION_CALL]
            self.items += conv.output_to_history(kept, [None] * len(kept))
            self.console.print("[yellow](stopped; the answer so far is kept)[/]", highlight=False)
            return False
        builtin = self.options.builtin
        ran = False
        for i, output in enumerate(outputs):
            if builtin_kind(builtin, output) is None:
                call_id = self.new_call_id() if output.kind is conv.ItemKind.FUNCTION_CALL else None
                self.items += conv.output_to_history([output], [call_id])
                if call_id is not None:
                    answer = self.ask(f"result of {output.name}> ")
                    self.items.append(conv.FunctionOutput(call_id, answer))
                    ran = True
            elif i == len(outputs) - 1 and not output.truncated:
                assert builtin is not None
                self.run_builtin(builtin, output)
                ran = True
            else:
                self.console.print(f"[yellow]note: the call to {output.recipient} was not run (cut off)[/]")
        return ran

    def run_builtin(self, builtin: BuiltinTools, output: conv.OutputItem) -> None:
        """Run a built-in tool call, show it dimmed, and add the call and the tool's reply to the conversation."""
        from rich.text import Text

        from gptoss.server import conversation as conv
        from gptoss.server.builtin import call_message

        message = call_message(output)
        step = builtin.run_sync(message)
        self.console.print(Text(tool_summary(step), style="dim"))
        channel = output.channel or "analysis"
        self.items.append(conv.BuiltinCall(message.recipient or "", output.text, channel))
        self.items += [
            conv.BuiltinOutput(m.author.name or message.recipient or "", conv.message_text(m), m.channel or channel)
            for m in step.messages
        ]

    def new_call_id(self) -> str:
        self.calls_made += 1
        return f"call_{self.calls_made}"

    def spec(self) -> conv.PromptSpec:
        from gptoss.server.conversation import PromptSpec, ResponseFormat
        from gptoss.server.responses import EFFORTS as EFFORT_VALUES

        o = self.options
        builtin = tuple(o.builtin.namespaces()) if o.builtin is not None else ()
        fmt = ResponseFormat("schema", o.schema, strict=True) if o.schema is not None else None
        return PromptSpec(
            tuple(self.items), o.developer, o.tools, effort=EFFORT_VALUES[o.effort], date=today(), builtin=builtin,
            response_format=fmt, format_param="--schema",
        )  # fmt: skip

    def generate(self) -> list[conv.OutputItem]:
        from gptoss.sampling import SamplingParams
        from gptoss.server.builtin import declared_names
        from gptoss.server.config import ServerConfig
        from gptoss.server.conversation import OutputParser, render_prompt
        from gptoss.server.generation import constraint, reasoning_budget

        budget_left = self.fit()
        prompt = render_prompt(self.spec(), self.encoding)
        stops = frozenset(self.encoding.stop_tokens_for_assistant_actions())
        o = self.options
        params = SamplingParams(temperature=o.temperature, seed=o.seed, max_tokens=budget_left, stop_tokens=stops)
        budget = reasoning_budget(o.max_reasoning_tokens, o.max_tokens, ServerConfig.max_reasoning_tokens)
        steps = self.source.generate(prompt.tokens, params, None, constraint(prompt.rules, budget))
        parser = OutputParser(self.encoding, [t.name for t in o.tools] + declared_names(o.builtin))
        try:
            tokens = (e.token for e in steps if e is not None)
            if o.raw:
                self.show_raw(prompt.tokens, tokens, parser)
            else:
                self.show_formatted(tokens, parser)
        finally:
            steps.close()  # type: ignore[attr-defined]  # a generator: stops the model at once on Ctrl-C
        return parser.items

    def fit(self) -> int:
        """Drops the oldest turns until the prompt leaves room for a --max-tokens answer; the answer's budget."""
        from gptoss.cli.chat_history import fit
        from gptoss.server.conversation import render_prompt

        def measure(items: list[conv.Item]) -> int:
            self.items = items
            return len(render_prompt(self.spec(), self.encoding).tokens)

        fitted = fit(list(self.items), measure, self.source.context_length, self.options.max_tokens)
        self.items = fitted.items
        if fitted.dropped:
            self.console.print(
                f"[yellow](dropped the oldest {fitted.dropped} turn(s) to keep room for a {self.options.max_tokens}"
                f"-token answer in the {self.source.context_length}-token context; /clear starts over)[/]",
                highlight=False,
            )
        return fitted.budget

    def consume(self, tokens: Any, on_token: Callable[[int], None]) -> None:
        """Feeds generated tokens to on_token until the end, or until Ctrl-C (which sets `interrupted`)."""
        self.interrupted = False
        try:
            for token in tokens:
                on_token(token)
        except KeyboardInterrupt:
            self.interrupted = True

    def show_formatted(self, tokens: Any, parser: conv.OutputParser) -> None:
        from rich.live import Live

        from gptoss.engine import TokenEvent

        view, rate = TurnView(builtin=self.options.builtin), Rate()

        def on_token(token: int) -> None:
            rate.tick()
            for event in parser.feed(TokenEvent(token)):
                view.apply(event)
            live.update(rate.below(view.render()))

        with Live(rate.below(view.render()), console=self.console, refresh_per_second=12) as live:
            self.consume(tokens, on_token)
            for event in parser.finish():
                view.apply(event)
            live.update(view.render())
        self.console.print(f"[dim]{rate.summary()}[/]", highlight=False)
        for problem in parser.problems:
            self.console.print(f"[yellow]note: malformed output ({problem.kind}): {problem.detail}[/]")

    def show_raw(self, prompt: list[int], tokens: Any, parser: conv.OutputParser) -> None:
        from gptoss.engine import TokenEvent

        self.console.print(self.encoding.decode(prompt[-2:]), style="dim", end="", markup=False, highlight=False)

        def on_token(token: int) -> None:
            parser.feed(TokenEvent(token))
            self.console.print(self.encoding.decode([token]), end="", markup=False, highlight=False)

        self.consume(tokens, on_token)
        parser.finish()
        self.console.print()


def read_json(path: Path, flag: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{flag} {path}: cannot read a JSON file: {e}") from None


def read_schema(path: Path | None) -> dict[str, Any] | None:
    """A JSON Schema file the constrained decoder can enforce in full (UserError naming what it cannot)."""
    if path is None:
        return None
    schema = read_json(path, "--schema")
    if not isinstance(schema, dict):
        raise UserError(f"--schema {path}: expected a JSON Schema object, got {type(schema).__name__}")
    from gptoss.harmony.constraint import SchemaError, check_schema

    try:
        check_schema(schema, True, "--schema")
    except SchemaError as e:
        raise UserError(f"--schema {path}: {e}") from None
    return schema


def today() -> str:
    from gptoss.server.config import utc_today

    return utc_today()


def check_arguments(args: argparse.Namespace) -> None:
    from gptoss.cli.serve import check_device

    check_device(args)
    if args.context is not None and args.context <= 0:
        raise UserError(f"--context must be positive, got {args.context}")
    if args.max_tokens <= 0:
        raise UserError(f"--max-tokens must be positive, got {args.max_tokens}")
    if args.max_reasoning_tokens is not None and args.max_reasoning_tokens < 0:
        raise UserError(f"--max-reasoning-tokens must be >= 0, got {args.max_reasoning_tokens}")
    if not 0 <= args.temperature <= 2:
        raise UserError(f"--temperature must be in 0..2, got {args.temperature}")
    if args.browser is not None and not args.browser.is_dir():
        raise UserError(f"--browser {args.browser}: no such directory")


def builtin_tools(args: argparse.Namespace, functions: tuple[conv.FunctionTool, ...]) -> BuiltinTools | None:
    """The built-in tools `--browser DIR` / `--python` ask for (None when neither); python must be able to run."""
    from gptoss.tools import BrowserTool, BuiltinTools, LocalIndex, PythonTool

    if args.browser is None and not args.python:
        return None
    python = None
    if args.python:
        python = PythonTool()
        reason = python.unavailable_reason()
        if reason is not None:
            python.close()
            raise UserError(f"--python: the python tool cannot run here: {reason}")
    browser = BrowserTool(LocalIndex(args.browser)) if args.browser is not None else None
    return BuiltinTools(browser=browser, python=python, user_functions=[f.name for f in functions])


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from gptoss.cli.serve import load_with_progress, resolve_checkpoint
    from gptoss.engine import ModelSource
    from gptoss.server.generation import harmony

    check_arguments(args)
    functions = read_functions(args.functions)
    options = ChatOptions(
        args.reasoning_effort, args.developer_message, functions, args.raw,
        args.temperature, args.max_tokens, args.seed, builtin_tools(args, functions),
        read_schema(args.schema), args.max_reasoning_tokens,
    )  # fmt: skip
    console = Console()
    path = resolve_checkpoint(args.model, Console(stderr=True))
    model = load_with_progress(path, args.context, args.dtype, Console(stderr=True), args.lora, args.device)
    session = ChatSession(ModelSource(model), harmony(), options, console, lambda prompt: console.input(prompt))
    try:
        session.loop()
    finally:
        if options.builtin is not None:
            options.builtin.close()
    return 0
