"""Which checkpoint `serve` / `chat` use: `--model tiny-random`, and without --model the shipped demo model when the
package holds it (else the tiny random checkpoint); each says what it is."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from gptoss.cli.serve import resolve_checkpoint
from gptoss.demo import shipped


def console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=400), out


@pytest.fixture()
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    return tmp_path


def test_tiny_random_by_name(data_home: Path) -> None:
    c, out = console()
    path = resolve_checkpoint("tiny-random", c)
    assert path.name == "tiny-random" and (path / "config.json").exists()
    assert "--model tiny-random: using a tiny RANDOM checkpoint" in out.getvalue()


def test_no_model_without_a_shipped_demo_is_the_tiny_random_checkpoint(
    data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shipped, "available", lambda: False)
    c, out = console()
    assert resolve_checkpoint(None, c).name == "tiny-random"
    assert "No --model given: using a tiny RANDOM checkpoint" in out.getvalue()


def test_no_model_with_a_shipped_demo_expands_it_and_says_what_it_is(
    data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = data_home / "gptoss" / "demo-0123456789ab"
    calls: list[int] = []

    def ensure() -> tuple[Path, bool]:
        calls.append(1)
        return folder, len(calls) == 1

    monkeypatch.setattr(shipped, "available", lambda: True)
    monkeypatch.setattr(shipped, "ensure_demo", ensure)
    c, out = console()
    assert resolve_checkpoint(None, c) == folder
    assert resolve_checkpoint(None, c) == folder
    said = out.getvalue()
    assert f"No --model given: using the built-in demo model at {folder} (unpacked it now)" in said
    assert "(unpacked earlier)" in said and "trained on synthetic tasks only" in said
