"""The public API: load / logits / generate, and its input errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gptoss
from gptoss.sampling import SamplingParams
from tests.test_model import prompt


@pytest.fixture(scope="module")
def model(tiny_dir: Path) -> gptoss.Model:
    return gptoss.load(tiny_dir, dtype=torch.float32, context_length=64)


def test_greedy_generate_follows_full_forward_argmax(model: gptoss.Model) -> None:
    ids = prompt(10, 1024)
    out = list(model.generate(ids, max_tokens=8, temperature=0))
    assert len(out) == 8
    seq = list(ids)
    for token in out:  # each greedy token is the argmax of a full recompute over everything before it
        assert token == int(model.logits(seq)[-1].argmax())
        seq.append(token)


def test_seeded_sampling_reproduces(model: gptoss.Model) -> None:
    ids = prompt(5, 1024)
    a = list(model.generate(ids, max_tokens=12, temperature=1.0, top_p=0.9, seed=11))
    b = list(model.generate(ids, max_tokens=12, temperature=1.0, top_p=0.9, seed=11))
    c = list(model.generate(ids, max_tokens=12, temperature=1.0, top_p=0.9, seed=12))
    assert a == b and a != c


def test_stops_after_yielding_a_stop_token(model: gptoss.Model) -> None:
    ids = prompt(5, 1024)
    free = list(model.generate(ids, max_tokens=10, temperature=0))
    stopped = list(model.generate(ids, max_tokens=10, temperature=0, stop_tokens=[free[3]]))
    assert stopped == free[: free.index(free[3]) + 1]


def test_generation_runs_to_the_context_limit(model: gptoss.Model) -> None:
    assert len(list(model.generate(prompt(60, 1024), temperature=0))) == 4  # 60 + 4 = the limit of 64


@pytest.mark.parametrize(
    ("ids", "kwargs", "message"),
    [
        ([1, 1024], {}, r"token id 1024 at index 1 is outside the vocabulary \(0..1023\)"),
        ([-1], {}, r"token id -1 at index 0 is outside the vocabulary"),
        ([], {}, "empty prompt"),
        (
            list(range(60)),
            {"max_tokens": 5},
            "prompt of 60 tokens \\+ max_tokens 5 exceeds the context limit of 64",
        ),
        (list(range(64)), {}, "prompt of 64 tokens exceeds the context limit of 64"),
        ([1], {"temperature": -0.5}, "temperature must be >= 0"),
    ],
)
def test_generate_bad_input(model: gptoss.Model, ids: list[int], kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(gptoss.InputError, match=message):
        model.generate(ids, **kwargs)  # raised at the call, before any token is produced


def test_logits_bad_input(model: gptoss.Model) -> None:
    with pytest.raises(gptoss.InputError, match="65 tokens exceed the context limit of 64"):
        model.logits(list(range(65)))
    with pytest.raises(gptoss.InputError, match="token id 2.5 at index 0"):
        model.logits([2.5])  # type: ignore[list-item]


def test_context_length_bounds(tiny_dir: Path) -> None:
    assert gptoss.load(tiny_dir).context_length == 256  # tiny: 64 * factor 4
    with pytest.raises(gptoss.InputError, match=r"context_length 257 must be in 1..256"):
        gptoss.load(tiny_dir, context_length=257)


class _OnlyTokens:
    """A constraint allowing a fixed set; records what it was told."""

    def __init__(self, vocab: int, allowed: list[int]) -> None:
        self.allowed = torch.zeros(vocab, dtype=torch.bool)
        self.allowed[allowed] = True
        self.seen: list[int] = []

    def mask(self) -> torch.Tensor:
        return self.allowed

    def advance(self, token: int) -> None:
        self.seen.append(token)


def test_constraint_restricts_every_token(model: gptoss.Model) -> None:
    allowed = [5, 17, 301]
    c = _OnlyTokens(model.config.vocab_size, allowed)
    out = list(model.generate_with([1, 2, 3], SamplingParams(temperature=1.5, seed=3, max_tokens=20), c))
    assert len(out) == 20 and set(out) <= set(allowed) and c.seen == out
    steps = [s for s in model.steps([1, 2, 3], SamplingParams(temperature=0, max_tokens=3), constraint=c) if s]
    for token, logits in steps:  # the yielded logits are the masked ones (so logprobs are consistent)
        assert torch.isinf(logits[~c.allowed]).all() and token == int(logits.argmax())
