"""The README's first hour, as a new user runs it: the set-up command installs everything its Python example imports,
and that example, run as written, gets an answer from the server the set-up command starts."""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.cli.test_serve import free_port
from tests.engine.checkpoints import tiny_random_home

README = Path(__file__).resolve().parent.parent / "README.md"


def setup_section() -> tuple[str, str]:
    """(the set-up shell command, the Python example right after it)."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Set up on a fresh machine") :]
    command = re.search(r"```bash\n(.*?)\n```", section, re.S)
    example = re.search(r"```python\n(.*?)\n```", section, re.S)
    assert command is not None and example is not None
    return command.group(1), example.group(1)


def installed_by(command: str) -> set[str]:
    """The distributions the command's `pip install`s name (`-e .` is this project)."""
    names: set[str] = set()
    for step in command.split("&&"):
        words = shlex.split(step)
        if words[:2] == ["pip", "install"]:
            for word in words[2:]:
                if word == ".":
                    names.add("gptoss")
                elif not word.startswith("-"):
                    names.add(re.split(r"[=<>\[]", word)[0].lower())
    return names


def imported_by(example: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(example)):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def test_setup_installs_what_the_example_imports() -> None:
    import importlib.metadata

    command, example = setup_section()
    installed = installed_by(command)
    assert {"torch", "gptoss", "openai"} <= installed
    providers = importlib.metadata.packages_distributions()
    for module in imported_by(example):
        assert {d.lower() for d in providers[module]} & installed, f"the set-up command does not install {module}"


def test_installed_by_reads_pip_commands() -> None:
    assert installed_by("pip install torch==2.13.0 && pip install -e . openai && gptoss serve") == {
        "torch",
        "gptoss",
        "openai",
    }


@pytest.mark.slow
def test_example_runs_as_written_against_the_default_server(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    command, example = setup_section()
    serve = shlex.split(command.split("&&")[-1])
    assert serve == ["gptoss", "serve"]
    port = free_port()
    env = {**os.environ, "XDG_DATA_HOME": str(tiny_random_home(tmp_path_factory)), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "gptoss", *serve[1:], "--port", str(port), "--store", str(tmp_path / "s.sqlite3")]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(example.replace(":8000/", f":{port}/"), "README example", "exec"), {})
        assert out.getvalue().startswith("completed Hello! I am a tiny demo model"), out.getvalue()  # the default
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"gptoss serve exited with {proc.returncode}"
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError("gptoss serve did not become healthy within 90 s")
