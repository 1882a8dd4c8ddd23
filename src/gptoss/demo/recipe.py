"""The demo model's recipe: its shape, its data and its three `gptoss finetune --full` phases.

The architecture is gpt-oss's own at toy scale: attention sinks, sliding (banded) and full layers alternating,
MoE with MXFP4 experts (top-2 of 8), YaRN to a 4,096-token context, the full o200k_harmony vocabulary (the rows of
tokens the data never uses stay zero: `--sparse-vocab`).

Phase "copy" trains on the copy drill alone (data.copy_drill: repeat 8-30 numbers and words), phase "tasks" on the
task families with some drill mixed in, phase "polish" on the same data again at half the learning rate. Without
the first phase the model learns every task's template but never copies a number or a name from the user's words
(0% correct after 1,000 steps): copying needs an induction circuit, which forms only when most of the trained
tokens reward it.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from gptoss.config import PRESETS, ModelConfig
from gptoss.demo import data
from gptoss.demo import tasks as tasks_module
from gptoss.finetune.train import TrainConfig
from gptoss.random_checkpoint import write_random_checkpoint

DEMO_CONFIG: ModelConfig = dataclasses.replace(
    PRESETS["tiny"],
    vocab_size=201088,
    hidden_size=128,
    intermediate_size=128,
    head_dim=32,
    num_attention_heads=4,
    num_key_value_heads=2,
    sliding_window=64,
    # theta 1e4 and YaRN from 1,024 leave ~6 of a 32-dim head's 16 rotary pairs with wavelengths under 128 tokens
    # (theta 150,000 from 256 left 2-3): the positional resolution a previous-token head, hence copying, needs.
    rope_theta=10000.0,
    initial_context_length=1024,
    rope_scaling_factor=4.0,
)
INIT_SEED = 0
DATA_SEED = 0  # the eval draws held-out prompts with other seeds
PACK_TOKENS = 8192  # a step's conversations go through the model in packed passes of up to this many tokens


@dataclass(frozen=True)
class Phase:
    name: str
    train: TrainConfig
    drill: int  # copy-drill conversations in the phase's data
    tasks: int  # task conversations (the families in turn)
    drill_largest: int = 99  # the drill's numbers go up to this (past 99 they take several tokens)
    drill_words: tuple[str, ...] = tasks_module.ECHO_WORDS  # and its words are drawn from these
    families: tuple[str, ...] = tuple(tasks_module.FAMILIES)  # taken in turn: a family named twice gets twice the share
    earlier: float = 0.0  # the share of task conversations that follow an earlier exchange (data.with_earlier)


def _train(steps: int, per_step: int, lr: float = 2e-3) -> TrainConfig:
    return TrainConfig(
        lr=lr, max_steps=steps, warmup_steps=20, grad_accum=per_step, max_grad_norm=1.0, save_every=250, seed=0,
        pack_tokens=PACK_TOKENS,
    )  # fmt: skip


# Function calling gets 3 of 8 shares and arithmetic 2: they copy the most (names, ids, units, amounts, operands),
# while greetings and extraction were right every time with an equal share (echo is only a copying aid).
MIX = ("function", "arithmetic", "extraction", "function", "chat", "arithmetic", "function", "echo")


# A quarter of the task conversations follow an earlier exchange (its assistant messages context only): trained on
# single questions, the model answered a chat's second question correctly 0-2% of the time.
EARLIER = 0.25


def _tasks_phase(name: str, train: TrainConfig) -> Phase:
    words = tasks_module.DRILL_WORDS
    return Phase(name, train, 4000, 12000, drill_largest=9999, drill_words=words, families=MIX, earlier=EARLIER)


PHASES = (
    Phase("copy", _train(1800, 32), drill=57600, tasks=0),
    _tasks_phase("tasks", _train(2000, 16)),
    # the same data again from a fresh warmup at half the rate: the copies of names and multi-token numbers are
    # still improving when the tasks phase's schedule ends
    _tasks_phase("polish", _train(1400, 16, lr=1e-3)),
)
TRAIN = PHASES[0].train  # the first phase: what the determinism test re-runs


def write_initial_checkpoint(folder: Path) -> Path:
    """The recipe's random start (seeded), with the unembedding tied to the embedding at initialisation."""
    write_random_checkpoint(folder, DEMO_CONFIG, "hf", seed=INIT_SEED)
    tie_initial_unembedding(folder)
    return folder


def tie_initial_unembedding(checkpoint: Path) -> None:
    """Starts the unembedding as a scaled copy of the embedding (they stay two separately trained matrices, as in
    gpt-oss). A token's own logit is then high wherever its embedding is carried forward, which is what the tasks
    need (numbers, names and cities copied into calls and answers): otherwise each number token must learn its own
    input-to-output match from the few conversations it appears in."""
    path = checkpoint / "model.safetensors"
    tensors = load_file(path)
    emb, head = tensors["model.embed_tokens.weight"], tensors["lm_head.weight"]
    scale = head.float().std() / emb.float().std()
    tensors["lm_head.weight"] = (emb.float() * scale).to(head.dtype)
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    save_file(tensors, path, metadata)


def phase_lines(phase: Phase) -> list[str]:
    """The phase's training data as JSONL lines: drill and task conversations, shuffled (seeded)."""
    rng = random.Random(DATA_SEED)
    drill = [data.copy_drill(rng, largest=phase.drill_largest, words=phase.drill_words) for _ in range(phase.drill)]
    lines = [c.to_json() for c in drill]
    tasks = data.generate(phase.tasks, DATA_SEED, phase.families, phase.earlier) if phase.tasks else []
    lines += list(data.jsonl_lines(tasks))
    random.Random(DATA_SEED + 1).shuffle(lines)
    return lines


def carry_vocabulary_rows(trained: Path, start: Path, out: Path) -> Path:
    """`trained` with every vocabulary row its phase never used (zero under --sparse-vocab) taken from the random
    start, so the next phase's new tokens begin where a fresh model would, not at zero."""
    tensors = load_file(trained / "model.safetensors")
    initial = load_file(start / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        unused = tensors[name].float().abs().sum(dim=1) == 0
        tensors[name][unused] = initial[name][unused]
    with safe_open(trained / "model.safetensors", "pt") as f:
        metadata = f.metadata()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "model.safetensors", metadata)
    (out / "config.json").write_text((trained / "config.json").read_text())
    return out


def finetune_argv(model: str, data: str, out: str, train: TrainConfig = TRAIN) -> list[str]:
    """The `gptoss finetune` command line of the recipe."""
    return [
        "finetune", "--model", model, "--data", data, "--out", out, "--full", "--sparse-vocab",
        "--lr", str(train.lr), "--max-steps", str(train.max_steps), "--warmup-steps", str(train.warmup_steps),
        "--grad-accum", str(train.grad_accum), "--max-grad-norm", str(train.max_grad_norm),
        "--save-every", str(train.save_every), "--seed", str(train.seed), "--max-length", "1024",
        "--pack-tokens", str(train.pack_tokens),
    ]  # fmt: skip
