"""A tiny model with the full harmony vocabulary (so harmony conversations fit) whose final norm is scaled by 4.

A random model's unit-scale final norm bounds how peaked its softmax over 201k tokens can get (with |h| ~ 8 and
unit-norm unembedding rows, cross-entropy cannot go below ~4.7 nats), so no adapter on the blocks could learn an
answer; a larger final norm, as trained models have, lifts that ceiling."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from gptoss.engine.loader import TINY_RANDOM
from gptoss.random_checkpoint import write_random_checkpoint

QA = [
    ("What is the capital of France?", "Paris."),
    ("Who wrote Hamlet?", "Shakespeare wrote it."),
    ("Name a prime.", "Seven is prime."),
]


@pytest.fixture(scope="session")
def harmony_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_random_checkpoint(tmp_path_factory.mktemp("ft") / "tiny-harmony", TINY_RANDOM, "hf", seed=0)
    tensors = load_file(path / "model.safetensors")
    tensors["model.norm.weight"] = tensors["model.norm.weight"] * 4
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return path


def today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


@pytest.fixture()
def qa_data(tmp_path: Path) -> Path:
    """Three one-turn conversations, dated today so their system message is the one `gptoss serve` writes."""
    path = tmp_path / "qa.jsonl"
    lines = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "reasoning_effort": "low"}
        | {"date": today()}
        for q, a in QA
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path
