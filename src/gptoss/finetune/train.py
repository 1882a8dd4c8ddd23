"""The training loop: AdamW, linear warmup + cosine decay, gradient accumulation, clipping, an eval split,
checkpoints that resume bit-identically, a progress bar and a JSONL metrics log.

One optimizer step takes `grad_accum` conversations; its loss is the mean cross-entropy over all their trained
tokens (token-weighted, so long answers count for what they are). The order of conversations is a function of
(seed, epoch) only, and a checkpoint stores the parameters, the optimizer state and the RNG state, so a run resumed
from step N continues exactly as the uninterrupted run did.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from gptoss.finetune.data import Example
from gptoss.finetune.objective import differentiable_ops, loss_sum, loss_sum_packed
from gptoss.finetune.vocab import SparseVocab
from gptoss.model import Transformer

STATE = "trainer_state.pt"


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 2e-4
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_accum: int = 1
    pack_tokens: int = 0  # > 0: a step's conversations go through the model packed, up to this many tokens a pass
    max_grad_norm: float = 1.0  # 0 = no clipping
    checkpointing: bool = False  # recompute each block's activations in the backward pass
    eval_every: int = 0  # steps; 0 = only at the end (when there is an eval split)
    save_every: int = 0  # steps; 0 = no intermediate checkpoints
    seed: int = 0

    def total_steps(self, n_train: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil(n_train * self.epochs / self.grad_accum))


def learning_rate(cfg: TrainConfig, step: int, total: int) -> float:
    """Linear warmup over `warmup_steps`, then cosine decay to 0 at `total` (step is 0-based)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def split(examples: Sequence[Example], eval_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded random eval split (at least one example when the fraction is > 0; never all of them)."""
    if eval_fraction <= 0:
        return list(examples), []
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    n_eval = min(len(examples) - 1, max(1, round(len(examples) * eval_fraction)))
    return [examples[i] for i in order[n_eval:]], [examples[i] for i in order[:n_eval]]


def batch_for(step: int, cfg: TrainConfig, n: int) -> list[int]:
    """Indices of the conversations of `step`: epoch e walks a permutation seeded by (seed, e)."""
    out = []
    for c in range(step * cfg.grad_accum, (step + 1) * cfg.grad_accum):
        epoch, k = divmod(c, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        out.append(int(perm[k]))
    return out


def packs(examples: Sequence[Example], pack_tokens: int) -> list[list[Example]]:
    """The forward passes of a step: each conversation alone (pack_tokens 0), or consecutive conversations
    grouped while their tokens fit in pack_tokens (a longer one goes alone)."""
    if pack_tokens <= 0:
        return [[e] for e in examples]
    out: list[list[Example]] = []
    size = 0
    for e in examples:
        if out and size + len(e.tokens) <= pack_tokens:
            out[-1].append(e)
            size += len(e.tokens)
        else:
            out.append([e])
            size = len(e.tokens)
    return out


@dataclass
class StepResult:
    loss: float
    tokens: int  # trained tokens in the step
    seen: int  # all tokens the step processed
    grad_norm: float


class Trainer:
    """Owns the optimizer over `params` (which the model reads through `tr`: adapter factors or dense weights)."""

    def __init__(
        self,
        tr: Transformer,
        params: dict[str, torch.Tensor],
        cfg: TrainConfig,
        modules: list[Any],
        vocab: SparseVocab | None = None,
    ):
        self.tr, self.params, self.cfg, self.modules, self.vocab = tr, params, cfg, modules, vocab
        decay = [p for n, p in params.items() if p.ndim >= 2]
        no_decay = [p for n, p in params.items() if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)
        self.step = 0

    def train_step(self, examples: Sequence[Example], total: int) -> StepResult:
        self._mode(True)
        n = sum(sum(e.mask[1:]) for e in examples)
        lr = learning_rate(self.cfg, self.step, total)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        total_loss = 0.0
        with differentiable_ops():
            for group in packs(examples, self.cfg.pack_tokens):
                loss, _ = self._loss(group, self.cfg.checkpointing)
                (loss / n).backward()
                total_loss += loss.item()
        norm = self._clip()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return StepResult(total_loss / n, n, sum(len(e.tokens) for e in examples), norm)

    def _clip(self) -> float:
        params = list(self.params.values())
        if self.cfg.max_grad_norm > 0:
            return float(torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm))
        grads = [p.grad.norm() for p in params if p.grad is not None]
        return float(torch.stack(grads).norm()) if grads else 0.0

    @torch.no_grad()
    def evaluate(self, examples: Sequence[Example]) -> float:
        self._mode(False)
        total, n = 0.0, 0
        with differentiable_ops():
            for group in packs(examples, self.cfg.pack_tokens):
                loss, k = self._loss(group, False)
                total, n = total + loss.item(), n + k
        return total / max(1, n)

    def _loss(self, group: Sequence[Example], checkpointing: bool) -> tuple[torch.Tensor, int]:
        if len(group) == 1 and not self.cfg.pack_tokens:
            return loss_sum(self.tr, group[0].tokens, group[0].mask, checkpointing, self.vocab)
        return loss_sum_packed(self.tr, group, checkpointing, self.vocab)

    def _mode(self, training: bool) -> None:
        for m in self.modules:
            m.train(training)

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "params": {n: p.detach().clone() for n, p in self.params.items()},
            "optimizer": self.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "config": asdict(self.cfg),
        }

    def restore(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(state["params"][n])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        self.step = int(state["step"])


def save_checkpoint(trainer: Trainer, directory: Path, save_weights: Callable[[Path], object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(directory)
    tmp = directory / (STATE + ".tmp")
    torch.save(trainer.state(), tmp)
    tmp.replace(directory / STATE)  # the state file appears last: its presence marks a complete checkpoint
    return directory


def latest_checkpoint(out: Path) -> Path | None:
    found = [p for p in out.glob("checkpoint-*") if (p / STATE).exists() and p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


class MetricsLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
