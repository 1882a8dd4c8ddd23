"""`gptoss chat --browser DIR / --python`: built-in tool calls run inside the chat loop (scripted model output)."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from rich.console import Console

from gptoss.cli.__main__ import main
from gptoss.cli.chat import ChatOptions, ChatSession
from gptoss.server.conversation import BuiltinCall, BuiltinOutput, Reasoning, Text
from gptoss.server.generation import harmony
from gptoss.tools import BrowserTool, BuiltinTools, LocalIndex, PythonTool
from tests.engine.scripted import ScriptedSource

SEARCH = (
    "<|channel|>analysis<|message|>Let me search.<|end|>"
    '<|start|>assistant to=browser.search<|channel|>analysis<|message|>{"query":"kiwi bird"}<|call|>'
)
CODE = "<|channel|>analysis to=python<|message|>x = 6 * 7\nprint(x)<|call|>"
FINAL = "<|channel|>final<|message|>Kiwis are birds.<|return|>"
OPEN = '<|channel|>analysis to=browser.open<|message|>{"id":0}<|call|>'
CITED = "<|channel|>final<|message|>Kiwis cannot fly【1†L2-L2】.<|return|>"


class EchoPython(PythonTool):
    def execute(self, code: str, cancel: threading.Event | None = None) -> str:
        return f"ran {len(code.splitlines())} lines\n42\n"


def tokens(text: str) -> list[int]:
    return harmony().encode(text, allowed_special="all")


def run_chat(builtin: BuiltinTools, *scripts: str, answers: list[str]) -> tuple[ChatSession, ScriptedSource, str]:
    source = ScriptedSource()
    source.queue(*(tokens(s) for s in scripts))
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False, color_system=None)
    replies = iter(answers)

    def ask(prompt: str) -> str:
        try:
            return next(replies)
        except StopIteration:
            raise EOFError from None

    chat = ChatSession(source, harmony(), ChatOptions(builtin=builtin), console, ask)
    try:
        chat.loop()
    finally:
        builtin.close()
    return chat, source, out.getvalue()


def test_browser_call_runs_in_the_chat_loop(tmp_path: Path) -> None:
    (tmp_path / "kiwi.md").write_text("# Kiwi\n\nThe kiwi is a flightless bird.\n")
    builtin = BuiltinTools(browser=BrowserTool(LocalIndex(tmp_path, base_url="https://docs.example/")))
    chat, source, text = run_chat(builtin, SEARCH, FINAL, answers=["kiwis?"])
    assert "⚙ browser.search(query='kiwi bird')" in text
    assert "↳ [0] kiwi bird **viewing lines" in text
    assert "Kiwis are birds." in text
    assert len(source.prompts) == 2
    first = harmony().decode(source.prompts[0])
    second = harmony().decode(source.prompts[1])
    assert "namespace browser" in first
    assert "<|start|>browser.search to=assistant<|channel|>analysis<|message|>[0] kiwi bird" in second
    assert second.endswith("<|start|>assistant")
    kinds = [type(item) for item in chat.items]
    assert kinds == [Text, Reasoning, BuiltinCall, BuiltinOutput, Text]
    assert chat.items[2] == BuiltinCall("browser.search", '{"query":"kiwi bird"}', "analysis")
    assert "→ browser.search" not in text  # shown once, when it runs


def test_citations_in_the_answer_become_links(tmp_path: Path) -> None:
    (tmp_path / "kiwi.md").write_text("# Kiwi\n\nThe kiwi is a flightless bird.\n")
    builtin = BuiltinTools(browser=BrowserTool(LocalIndex(tmp_path, base_url="https://docs.example/")))
    _, source, text = run_chat(builtin, SEARCH, OPEN, CITED, answers=["kiwis?"])
    assert "⚙ browser.open(id=0)" in text and len(source.prompts) == 3
    assert "Kiwis cannot fly (docs.example)." in text and "fly【" not in text


def test_python_call_runs_and_state_resets_on_clear() -> None:
    builtin = BuiltinTools(python=EchoPython())
    chat, source, text = run_chat(builtin, CODE, FINAL, answers=["compute", "/clear"])
    assert "⚙ python: x = 6 * 7 ⏎ print(x)" in text
    assert "↳ ran 2 lines 42" in text
    second = harmony().decode(source.prompts[1])
    assert "## python" in harmony().decode(source.prompts[0])
    assert "<|start|>python to=assistant<|channel|>analysis<|message|>ran 2 lines\n42\n<|end|>" in second
    assert chat.items == []


def test_no_tools_means_no_tool_sections_and_calls_are_not_run() -> None:
    source = ScriptedSource()
    source.queue(tokens(SEARCH))
    out = io.StringIO()
    answers = iter(["kiwis?", "(no browser here)"])  # the call is a plain function call: the user answers it

    def ask(prompt: str) -> str:
        try:
            return next(answers)
        except StopIteration:
            raise EOFError from None

    chat = ChatSession(source, harmony(), ChatOptions(), Console(file=out, width=200), ask)
    chat.loop()
    assert "namespace browser" not in harmony().decode(source.prompts[0])
    assert "⚙" not in out.getvalue() and len(source.prompts) == 2
    assert "<|start|>functions.browser.search to=assistant<|channel|>commentary<|message|>(no browser here)" in (
        harmony().decode(source.prompts[1])
    )


def test_python_unavailable_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(PythonTool, "unavailable_reason", lambda self: "bubblewrap (`bwrap`) is not installed.")
    assert main(["chat", "--python"]) == 2
    assert "--python: the python tool cannot run here: bubblewrap (`bwrap`) is not installed." in (
        " ".join(capsys.readouterr().err.split())
    )


def test_browser_dir_must_exist(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--browser", "/nonexistent/docs"]) == 2
    assert "--browser /nonexistent/docs: no such directory" in capsys.readouterr().err
