"""`gptoss chat`: the session over a scripted source, the --functions file, and the command on a real checkpoint."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from gptoss.cli.__main__ import UserError, main
from gptoss.cli.chat import ChatOptions, ChatSession, read_functions
from gptoss.server.conversation import FunctionCall, FunctionOutput, FunctionTool, Reasoning, Text
from gptoss.server.generation import harmony
from tests.engine.checkpoints import tiny_random_home as make_home
from tests.engine.scripted import ScriptedSource

ANSWER = (
    "<|channel|>analysis<|message|>Thinking hard.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>**Four.**<|return|>"
)
CALL = '<|channel|>commentary to=functions.lookup <|constrain|>json<|message|>{"q":"x"}<|call|>'
LOOKUP = FunctionTool("lookup", "Look something up.", {"type": "object"})


def tokens(text: str) -> list[int]:
    return harmony().encode(text, allowed_special="all")


@pytest.fixture(scope="module")
def tiny_random_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_home(tmp_path_factory)


def session(*scripts: str, answers: list[str], **options: object) -> tuple[ChatSession, ScriptedSource, io.StringIO]:
    source = ScriptedSource()
    source.queue(*(tokens(s) for s in scripts))
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False, color_system=None)
    replies: Iterator[str] = iter(answers)

    def ask(prompt: str) -> str:
        console.print(prompt, end="")
        try:
            return next(replies)
        except StopIteration:
            raise EOFError from None

    return ChatSession(source, harmony(), ChatOptions(**options), console, ask), source, out  # type: ignore[arg-type]


def test_reasoning_collapses_and_the_answer_is_rendered() -> None:
    chat, source, out = session(ANSWER, answers=["what is 2+2?", "/reasoning"])
    chat.loop()
    text = out.getvalue()
    assert "▸ reasoning: 7 tokens (/reasoning to show)" in text
    assert "Four." in text and "**Four.**" not in text  # markdown rendered
    assert text.rstrip().endswith(">>> Thinking hard.\n>>>")
    assert chat.items == [
        Text("user", "what is 2+2?"),
        Reasoning("Thinking hard."),
        Text("assistant", "**Four.**", "final"),
    ]
    assert "Reasoning: low" in harmony().decode(source.prompts[0])


def test_function_calls_are_answered_at_the_prompt_and_the_model_continues() -> None:
    done = "<|channel|>final<|message|>Found it.<|return|>"
    chat, source, out = session(CALL, done, answers=["look it up", '{"hit": 1}'], tools=(LOOKUP,), developer="Be kind.")
    chat.loop()
    assert '→ lookup({"q":"x"})' in out.getvalue()
    assert "result of lookup> " in out.getvalue()
    assert chat.items[1:] == [
        FunctionCall("call_1", "lookup", '{"q":"x"}'),
        FunctionOutput("call_1", '{"hit": 1}'),
        Text("assistant", "Found it.", "final"),
    ]
    second = harmony().decode(source.prompts[1])
    assert "# Instructions\n\nBe kind." in second and "// Look something up.\ntype lookup = (_: {\n}) => any;" in second
    assert second.endswith(
        '<|start|>functions.lookup to=assistant<|channel|>commentary<|message|>{"hit": 1}<|end|><|start|>assistant'
    )


def test_raw_mode_prints_harmony_tokens() -> None:
    chat, _, out = session(ANSWER, answers=["hi"], raw=True)
    chat.loop()
    assert "<|start|>assistant" + ANSWER in out.getvalue()


def test_commands_and_errors_keep_the_session_going() -> None:
    chat, source, out = session(ANSWER, answers=["/bogus", "/clear", "x " * 5000, "/quit", "never read"])
    source.context_length = 2000
    chat.loop()
    text = out.getvalue()
    assert "unknown command '/bogus'" in text and "(conversation cleared)" in text
    assert "error: this message takes 5067 tokens with the instructions, and the context holds 2000: shorten it" in text
    assert chat.items == []  # the failed turn was taken back


def test_empty_input_is_ignored_and_help_shows_the_limits() -> None:
    chat, source, out = session(ANSWER, answers=["", "   ", "/help"])
    chat.loop()
    assert source.prompts == []  # nothing was generated
    text = " ".join(out.getvalue().split())
    assert "per-turn limit: 2048 tokens (--max-tokens); context: 4096 tokens; conversation: 0 turn(s)" in text
    assert text.endswith(">>>")


def test_overflow_drops_the_oldest_turns_with_a_notice() -> None:
    chat, source, out = session(ANSWER, ANSWER, ANSWER, answers=["one " * 40, "two " * 40, "three"], max_tokens=100)
    source.context_length = 250
    chat.loop()
    text = " ".join(out.getvalue().split())
    assert "(dropped the oldest 1 turn(s) to keep room for a 100-token answer in the 250-token context" in text
    assert "error" not in text and len(source.prompts) == 3
    last = harmony().decode(source.prompts[-1])
    assert "one one" not in last and "two two" in last and "three" in last
    assert all(len(p) + 100 <= 250 for p in source.prompts)
    assert [p.max_tokens for p in source.params] == [100, 100, 100]


def test_the_last_turn_gets_what_room_is_left() -> None:
    chat, source, _ = session(ANSWER, answers=["hello " * 30], max_tokens=500)
    source.context_length = 300
    chat.loop()
    assert source.params[-1].max_tokens == 300 - len(source.prompts[-1])


def test_ctrl_d_ends_with_a_newline() -> None:
    chat, _, out = session(answers=[])
    chat.loop()
    assert out.getvalue().endswith(">>> \n")


def test_malformed_output_is_noted() -> None:
    chat, _, out = session("no header<|return|>", answers=["hi"])
    chat.loop()
    assert "note: malformed output (missing_message)" in out.getvalue()


def test_read_functions_accepts_three_shapes(tmp_path: Path) -> None:
    f = tmp_path / "f.json"
    f.write_text(json.dumps([
        {"type": "function", "function": {"name": "a", "description": "A.", "parameters": {"type": "object"}}},
        {"type": "function", "name": "b"},
        {"name": "c", "description": "C."},
    ]))  # fmt: skip
    assert read_functions(f) == (
        FunctionTool("a", "A.", {"type": "object"}),
        FunctionTool("b", "", None),
        FunctionTool("c", "C.", None),
    )
    assert read_functions(None) == ()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "cannot read a JSON file"),
        ('{"name": "a"}', "expected a JSON list of function tools"),
        ('[{"description": "x"}]', "entry 0 has no function name"),
        ("[3]", "entry 0 has no function name"),
    ],
)
def test_read_functions_errors(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "f.json"
    f.write_text(content)
    with pytest.raises(UserError, match=message):
        read_functions(f)
    with pytest.raises(UserError, match="cannot read a JSON file"):
        read_functions(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--context", "0"], "--context must be positive, got 0"),
        (["--max-tokens", "-1"], "--max-tokens must be positive, got -1"),
        (["--temperature", "5"], "--temperature must be in 0..2, got 5.0"),
        (["--model", "/nonexistent/ckpt"], "/nonexistent/ckpt: no such directory"),
    ],
)
def test_bad_arguments_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", *argv]) == 2
    assert message in capsys.readouterr().err


def test_chat_on_the_tiny_random_checkpoint(
    tiny_random_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tiny_random_home))
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    assert main(["chat", "--model", "tiny-random", "--max-tokens", "8", "--seed", "0"]) == 0
    captured = capsys.readouterr()
    assert "--model tiny-random: using a tiny RANDOM checkpoint" in " ".join(captured.err.split())
    assert ">>> " in captured.out


POINT = {
    "type": "object",
    "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["n"],
    "additionalProperties": False,
}


def test_schema_constrains_every_answer() -> None:
    chat, source, out = session('<|channel|>final<|message|>{"n":2}<|return|>', answers=["go"], schema=POINT)
    chat.loop()
    assert '{"n":2}' in out.getvalue() and source.constraints[-1] is not None
    free, _, _ = session(ANSWER, answers=["go"], schema=POINT)  # not JSON: the constraint refuses the script
    with pytest.raises(RuntimeError, match="not allowed by the constraint"):
        free.loop()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "cannot read a JSON file"),
        ("[1]", "expected a JSON Schema object, got list"),
        ('{"type": "strng"}', "invalid JSON Schema"),
        ('{"not": {}}', "keyword(s) 'not' in strict mode"),
    ],
)
def test_schema_file_errors(tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "s.json"
    f.write_text(content)
    assert main(["chat", "--schema", str(f)]) == 2
    assert message in capsys.readouterr().err


def test_chat_schema_on_the_tiny_random_checkpoint(
    tiny_random_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "s.json").write_text(json.dumps(POINT))
    monkeypatch.setenv("XDG_DATA_HOME", str(tiny_random_home))
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    argv = ["chat", "--schema", str(tmp_path / "s.json"), "--max-tokens", "60", "--max-reasoning-tokens", "4"]
    assert main([*argv, "--seed", "1"]) == 0
    out = capsys.readouterr().out
    start = out.index("{")
    assert json.loads(out[start : out.index("}", start) + 1])["n"] in range(1, 6)
