"""`gptoss chat` in a pseudo-terminal, as a person uses it, on the tiny random checkpoint: the spinner with tokens/s,
Ctrl-C stopping an answer but not the chat, empty lines ignored, old turns dropped when the context fills, Ctrl-D."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pexpect
import pytest

from tests.engine.checkpoints import tiny_random_home as make_home

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_random_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_home(tmp_path_factory)


def default_sigint() -> None:
    """SIGINT back to its default in the child: a runner started as a background job passes it on ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(home: Path, *args: str) -> pexpect.spawn:
    env = {**os.environ, "XDG_DATA_HOME": str(home), "PYTHONUNBUFFERED": "1", "COLUMNS": "250"}
    argv = ["-m", "gptoss", "chat", "--model", "tiny-random", "--seed", "0", *args]
    child = pexpect.spawn(
        sys.executable, argv, env=env, encoding="utf-8", dimensions=(50, 250), timeout=120, preexec_fn=default_sigint
    )
    child.expect_exact(">>> ")
    return child


def test_ctrl_c_stops_the_answer_and_keeps_the_conversation(tiny_random_home: Path) -> None:
    child = spawn(tiny_random_home, "--max-tokens", "4000")
    try:
        child.sendline("")  # ignored: no turn, no generation
        child.expect_exact(">>> ")
        child.sendline("hello there")
        child.expect(r"\d+ tokens, [\d.]+ tokens/s")  # the spinner line while it generates
        child.sendintr()
        child.expect_exact("(stopped; the answer so far is kept)")
        child.expect_exact(">>> ")
        child.sendline("/help")
        child.expect_exact("per-turn limit: 4000 tokens (--max-tokens)")
        child.expect_exact("conversation: 1 turn(s)")  # the empty line made none; the stopped turn is kept
        child.expect_exact(">>> ")
        child.sendintr()  # at the prompt: a hint, not an exit
        child.expect_exact("(Ctrl-D or /quit leaves)")
        child.sendeof()
        child.expect(pexpect.EOF)
        assert child.before.endswith("\r\n")  # Ctrl-D leaves the shell's prompt on a fresh line
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_a_full_context_drops_the_oldest_turns(tiny_random_home: Path) -> None:
    child = spawn(tiny_random_home, "--context", "260", "--max-tokens", "60")
    try:
        for i in range(4):
            child.sendline(f"message {i}: " + "words " * 40)
            index = child.expect([r"dropped the oldest \d+ turn\(s\)", r"\d+ tokens, [\d.]+ tokens/s, [\d.]+ s"])
            if index == 0:
                break
            child.expect_exact(">>> ")
        else:
            pytest.fail("no turn was dropped in 4 turns of ~50 tokens in a 260-token context")
        child.expect_exact(">>> ")
        assert "error" not in child.before
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
