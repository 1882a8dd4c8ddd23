"""The training loop: the schedule, the learning test (loss down >= 10x, then `gptoss serve --lora` answers as
trained), bit-identical resume, gradient checkpointing, eval split, metrics and full fine-tuning."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load_file

import gptoss
from gptoss.cli.__main__ import main
from gptoss.finetune.data import Example
from gptoss.finetune.lora import LoraAdapter, LoraConfig
from gptoss.finetune.objective import differentiable_ops, loss_sum
from gptoss.finetune.train import TrainConfig, batch_for, learning_rate, split
from tests.cli.test_serve import start
from tests.finetune.conftest import QA


def metrics(out: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def finetune(model: Path, data: Path, out: Path, *extra: str) -> None:
    argv = ["finetune", "--model", str(model), "--data", str(data), "--out", str(out), "--quiet", *extra]
    assert main(argv) == 0


def test_schedule_warms_up_then_decays_to_zero() -> None:
    cfg = TrainConfig(lr=1.0, warmup_steps=4)
    lrs = [learning_rate(cfg, s, 20) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(lrs[3:]))
    assert lrs[4] == 1.0 and lrs[-1] < 0.01


def test_batches_cover_every_example_once_per_epoch() -> None:
    cfg = TrainConfig(grad_accum=3, seed=5)
    seen = [i for step in range(4) for i in batch_for(step, cfg, 6)]  # 12 draws = 2 epochs of 6
    assert sorted(seen[:6]) == sorted(seen[6:]) == list(range(6))
    assert seen[:6] != seen[6:]  # each epoch has its own order


def test_eval_split_is_seeded_and_disjoint() -> None:
    examples = [Example([i, i], [0, 1], i) for i in range(10)]
    train, evals = split(examples, 0.2, seed=1)
    assert len(evals) == 2 and len(train) == 8 and not {e.line for e in train} & {e.line for e in evals}
    assert split(examples, 0.2, seed=1) == (train, evals)


@pytest.mark.slow
def test_lora_learns_the_answers_and_serve_lora_says_them(harmony_model: Path, qa_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    finetune(harmony_model, qa_data, out, "--max-steps", "60", "--lr", "1e-2", "--rank", "16", "--alpha", "32")
    losses = [m["loss"] for m in metrics(out)]
    assert losses[-1] * 10 <= losses[0], losses
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    server = start(
        tmp_path, tmp_path / "store.sqlite3", "--model", str(harmony_model), "--lora", str(out), "--dtype", "fp32"
    )
    try:
        for question, answer in QA:
            body = {"model": harmony_model.name, "messages": [{"role": "user", "content": question}], "temperature": 0}
            body |= {"reasoning_effort": "low", "max_tokens": 16}
            r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()
            assert r["choices"][0]["message"]["content"] == answer
    finally:
        server.stop()


def test_resume_is_bit_identical(harmony_model: Path, qa_data: Path, tmp_path: Path) -> None:
    opts = ["--max-steps", "6", "--save-every", "3", "--grad-accum", "2", "--dropout", "0.1", "--lr", "1e-3"]
    opts += ["--warmup-steps", "2", "--gradient-checkpointing", "--dtype", "fp32"]
    finetune(harmony_model, qa_data, tmp_path / "a", *opts)
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-3", tmp_path / "b" / "checkpoint-3")
    finetune(harmony_model, qa_data, tmp_path / "b", *opts, "--resume")
    a = load_file(tmp_path / "a" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(a[k].abs().max() > 0 for k in a if "lora_B" in k)  # it trained
    assert [m["step"] for m in metrics(tmp_path / "b")] == [4, 5, 6]
    assert [m["loss"] for m in metrics(tmp_path / "b")] == [m["loss"] for m in metrics(tmp_path / "a")][3:]


def test_resume_without_a_checkpoint_is_an_error(
    harmony_model: Path, qa_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["finetune", "--model", str(harmony_model), "--data", str(qa_data), "--out", str(tmp_path), "--resume"]
    assert main(argv) == 2
    assert f"--resume: no checkpoint-N folder with trainer_state.pt in {tmp_path}" in capsys.readouterr().err


def test_gradient_checkpointing_gives_the_same_gradients(harmony_model: Path) -> None:
    model = gptoss.load(harmony_model, dtype=torch.float32)
    adapter = LoraAdapter(model.config, LoraConfig(r=2, targets=("q", "o", "router", "down")))
    adapter.reset(torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in adapter.factors.values():
            p.add_(0.1)
    model.transformer.adapter = adapter
    tokens = torch.randint(0, 200_000, (40,), generator=torch.Generator().manual_seed(0)).tolist()
    grads = []
    for ckpt in (False, True):
        with differentiable_ops():
            loss, _ = loss_sum(model.transformer, tokens, [0] * 10 + [1] * 30, ckpt)
        loss.backward()
        grads.append({k: p.grad.clone() for k, p in adapter.factors.items() if p.grad is not None})
        adapter.zero_grad()
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(adapter.factors)
    assert all(torch.equal(grads[0][k], grads[1][k]) for k in grads[0])


def test_eval_split_reports_eval_loss(harmony_model: Path, qa_data: Path, tmp_path: Path) -> None:
    finetune(harmony_model, qa_data, tmp_path, "--max-steps", "2", "--eval-fraction", "0.3", "--eval-every", "1")
    records = metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2] and all(r["eval_loss"] > 0 for r in records)
    assert {"loss", "lr", "grad_norm", "trained_tokens", "tokens", "elapsed_s"} <= records[0].keys()


def test_full_finetuning_writes_a_loadable_checkpoint(harmony_model: Path, qa_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "full"
    finetune(harmony_model, qa_data, out, "--full", "--max-steps", "8", "--lr", "1e-3")
    losses = [m["loss"] for m in metrics(out)]
    assert losses[-1] < losses[0]
    report = json.loads((out / "requantization.json").read_text())
    assert report["expert_tensors_requantized"] == 2 * 4 and 0 < report["relative_rms_error"] < 0.2
    ids = [200006, 1428, 200008, 3575]
    before = gptoss.load(harmony_model, dtype=torch.float32).logits(ids)
    after = gptoss.load(out, dtype=torch.float32).logits(ids)
    assert (after - before).abs().max() > 1e-2
