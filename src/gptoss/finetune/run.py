"""One fine-tuning job from start to finish: load the base model and the data, build what is trained (a LoRA
adapter, or with `full` every weight), run the loop with eval, checkpoints, resume and metrics, save the result."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gptoss.errors import InputError
from gptoss.finetune.data import load_jsonl
from gptoss.finetune.full import FullParams, save_full
from gptoss.finetune.lora import LoraAdapter, LoraConfig
from gptoss.finetune.peft_io import save_adapter
from gptoss.finetune.train import (
    STATE,
    MetricsLog,
    StepResult,
    TrainConfig,
    Trainer,
    batch_for,
    latest_checkpoint,
    save_checkpoint,
    split,
)
from gptoss.finetune.vocab import SparseVocab
from gptoss.harmony import load_harmony_encoding
from gptoss.runtime import Model, load


@dataclass(frozen=True)
class Job:
    model: Path
    data: Path
    out: Path
    lora: LoraConfig | None  # None = full fine-tuning
    train: TrainConfig
    dtype: torch.dtype = torch.float32
    max_length: int | None = None  # default: the model's context
    eval_fraction: float = 0.0
    strict_data: bool = False
    resume: bool = False
    device: str = "cpu"
    sparse_vocab: bool = False  # full only: train the rows of the tokens the data uses (finetune/vocab.py)


@dataclass(frozen=True)
class Progress:
    step: int  # steps done
    total: int
    result: StepResult
    lr: float
    elapsed: float  # seconds since this process started training
    eval_loss: float | None


Callback = Callable[[Progress], None]
Notice = Callable[[str], None]


def prepare(job: Job, model: Model, vocab: SparseVocab | None = None) -> tuple[Trainer, Callable[[Path], object]]:
    """The trainer over what `job` trains, and the function that saves it (adapter or full checkpoint)."""
    tr = model.transformer
    if job.lora is not None:
        if vocab is not None:
            raise InputError("--sparse-vocab needs --full (LoRA leaves the vocabulary rows as they are)")
        adapter = LoraAdapter(model.config, job.lora).to(model.device)
        adapter.reset(torch.Generator().manual_seed(job.train.seed))
        tr.adapter = adapter
        params = dict(adapter.factors.items())
        return Trainer(tr, params, job.train, [adapter]), lambda d: save_adapter(adapter, d, str(job.model))
    full = FullParams(tr, vocab)
    tr.adapter = full
    return Trainer(tr, full.params, job.train, [full], vocab), lambda d: save_full(full, model.config, d)


def run(job: Job, on_step: Callback | None = None, notice: Notice = print) -> dict[str, Any]:
    encoding = load_harmony_encoding("HarmonyGptOss")
    torch.manual_seed(job.train.seed)
    model = load(job.model, device=job.device, dtype=job.dtype)
    limit = job.max_length or model.context_length
    data = load_jsonl(job.data, encoding, limit, job.strict_data)
    for problem in data.problems:
        notice(f"skipped {problem}")
    train, evals = split(data.examples, job.eval_fraction, job.train.seed)
    vocab = None
    if job.sparse_vocab:
        vocab = SparseVocab.of((e.tokens for e in data.examples), model.config.vocab_size, model.device)
        notice(f"sparse vocabulary: {len(vocab.used)} of {vocab.size} tokens trained, the other rows held at zero")
    trainer, save_weights = prepare(job, model, vocab)
    total = job.train.total_steps(len(train))
    resumed = _resume(job, trainer, notice)
    job.out.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(job.out / "metrics.jsonl")
    eval_loss, t0 = None, time.perf_counter()
    for step in range(trainer.step, total):
        result = trainer.train_step([train[i] for i in batch_for(step, job.train, len(train))], total)
        lr_now, elapsed, done = trainer.optimizer.param_groups[0]["lr"], time.perf_counter() - t0, step + 1
        eval_loss = _maybe_eval(trainer, evals, job.train, done, total)
        log.write(_record(done, result, lr_now, elapsed, eval_loss))
        if job.train.save_every and done % job.train.save_every == 0 and done < total:
            save_checkpoint(trainer, job.out / f"checkpoint-{done}", save_weights)
        if on_step is not None:
            on_step(Progress(done, total, result, lr_now, elapsed, eval_loss))
    save_weights(job.out)
    return {"steps": total, "resumed_from": resumed, "train": len(train), "eval": len(evals), "eval_loss": eval_loss}


def _resume(job: Job, trainer: Trainer, notice: Notice) -> int | None:
    if not job.resume:
        return None
    ckpt = latest_checkpoint(job.out)
    if ckpt is None:
        raise InputError(f"--resume: no checkpoint-N folder with {STATE} in {job.out}")
    state = torch.load(ckpt / STATE, weights_only=False)
    missing = sorted(set(trainer.params) - set(state["params"]))
    if missing:
        raise InputError(f"--resume: {ckpt} was saved by a different setup (no {missing[0]!r}); same options please")
    trainer.restore(state)
    notice(f"resumed from {ckpt} (step {trainer.step})")
    return trainer.step


def _maybe_eval(trainer: Trainer, evals: list[Any], cfg: TrainConfig, done: int, total: int) -> float | None:
    if not evals:
        return None
    if done == total or (cfg.eval_every and done % cfg.eval_every == 0):
        return trainer.evaluate(evals)
    return None


def _record(step: int, r: StepResult, lr: float, elapsed: float, eval_loss: float | None) -> dict[str, Any]:
    rec: dict[str, Any] = {"step": step, "loss": r.loss, "lr": lr, "grad_norm": r.grad_norm}
    rec.update({"trained_tokens": r.tokens, "tokens": r.seen, "elapsed_s": round(elapsed, 3)})
    if eval_loss is not None:
        rec["eval_loss"] = eval_loss
    return rec
