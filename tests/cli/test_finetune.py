"""`gptoss finetune` / `gptoss merge` on bad input: one line naming the problem, exit status 2; skipped lines are
reported with their line numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptoss.cli.__main__ import main
from tests.finetune.conftest import harmony_model, qa_data

__all__ = ["harmony_model", "qa_data"]  # fixtures used here


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--targets", "q,zz"], "unknown LoRA target(s) ['zz']: choose from q, k, v, o, router, gate_up, down"),
        (["--rank", "0"], "--rank must be positive, got 0"),
        (["--eval-fraction", "1.5"], "--eval-fraction must be in [0, 1), got 1.5"),
        (["--targets", "down", "--dropout", "0.1"], "dropout must be 0 when the router or experts are targeted"),
    ],
)
def test_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    argv = ["finetune", "--model", str(tmp_path), "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "o")]
    rc, err = run([*argv, *extra], capsys)
    assert rc == 2 and err.startswith("gptoss finetune: error: ") and message in err


def test_skipped_lines_are_reported(
    harmony_model: Path, qa_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "mixed.jsonl"
    data.write_text(qa_data.read_text().splitlines()[0] + '\n{"messages": [{"role": "robot", "content": "x"}]}\n')
    argv = ["finetune", "--model", str(harmony_model), "--data", str(data), "--out", str(tmp_path / "o")]
    rc, err = run([*argv, "--max-steps", "1", "--quiet"], capsys)
    assert rc == 0 and f"skipped {data}:2: messages[0]: unknown role 'robot'" in err
    rc, err = run([*argv, "--max-steps", "1", "--quiet", "--strict-data"], capsys)
    assert rc == 2 and f"{data}:2: messages[0]: unknown role 'robot'" in err


def test_merge_with_a_bad_adapter(harmony_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    rc, err = run(
        ["merge", "--model", str(harmony_model), "--lora", str(tmp_path / "a"), "--out", str(tmp_path)], capsys
    )
    assert rc == 2 and "adapter_model.safetensors: cannot read adapter weights" in err


def test_chat_lora_checks_the_adapter(harmony_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = run(["chat", "--model", str(harmony_model), "--lora", str(tmp_path)], capsys)
    assert rc == 2 and f"{tmp_path}: no adapter_config.json (not a PEFT adapter folder)" in err


def test_progress_bar_run_and_lora_loading(
    harmony_model: Path, qa_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run with the progress bar, then its adapter through serve/chat's loader (what `--lora DIR` does)."""
    import torch
    from rich.console import Console

    from gptoss.cli.serve import load_with_progress
    from gptoss.finetune.peft_io import load_adapter

    out = tmp_path / "o"
    argv = ["finetune", "--model", str(harmony_model), "--data", str(qa_data), "--out", str(out)]
    rc, err = run([*argv, "--max-steps", "2", "--lr", "1e-2", "--targets", "q,router"], capsys)
    assert rc == 0 and f"saved to {out}" in err
    model = load_with_progress(harmony_model, None, "fp32", Console(quiet=True), out)
    adapter = model.transformer.adapter
    assert adapter is not None and not adapter.training  # type: ignore[attr-defined]
    reference = load_adapter(out, model.config)
    assert all(torch.equal(p, reference.factors[k]) for k, p in adapter.factors.items())  # type: ignore[attr-defined]
