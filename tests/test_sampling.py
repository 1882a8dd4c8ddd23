from __future__ import annotations

import pytest
import torch

from gptoss.errors import InputError
from gptoss.sampling import SamplingParams, apply_mask, filter_logits, logprobs, make_generator, sample

LOGITS = torch.tensor([1.0, 3.0, 2.0, 0.5, -1.0])


def test_greedy_is_argmax() -> None:
    assert sample(LOGITS, SamplingParams(temperature=0), make_generator(0)) == 1


def test_top_k_keeps_k_best() -> None:
    x = filter_logits(LOGITS, SamplingParams(top_k=2))
    assert torch.isfinite(x).tolist() == [False, True, True, False, False]


def test_top_p_keeps_smallest_sufficient_set() -> None:
    probs = torch.softmax(LOGITS, -1)  # sorted: 1 (0.61), 2 (0.22), 0 (0.08), ...
    x = filter_logits(LOGITS, SamplingParams(top_p=0.7))
    assert torch.isfinite(x).tolist() == [False, True, True, False, False]
    x = filter_logits(LOGITS, SamplingParams(top_p=float(probs[1]) - 1e-3))
    assert torch.isfinite(x).tolist() == [False, True, False, False, False]


def test_min_p_is_relative_to_the_best() -> None:
    probs = torch.softmax(LOGITS, -1)
    ratio = float(probs[0] / probs[1])  # token 0 sits at this fraction of the best
    x = filter_logits(LOGITS, SamplingParams(min_p=ratio + 1e-3))
    assert torch.isfinite(x).tolist() == [False, True, True, False, False]


def test_temperature_scales() -> None:
    assert torch.allclose(filter_logits(LOGITS, SamplingParams(temperature=2.0)), LOGITS / 2)


def test_seed_reproduces_and_distribution_follows_softmax() -> None:
    p = SamplingParams(temperature=1.0, seed=0)
    a = [sample(LOGITS, p, g) for g in [make_generator(5)] for _ in range(2000)]
    b = [sample(LOGITS, p, g) for g in [make_generator(5)] for _ in range(2000)]
    assert a == b
    freq = torch.bincount(torch.tensor(a), minlength=5).float() / len(a)
    assert (freq - torch.softmax(LOGITS, -1)).abs().max() < 0.04


def test_logprobs_are_untempered() -> None:
    assert torch.allclose(logprobs(LOGITS).exp().sum(), torch.tensor(1.0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -1}, "temperature must be >= 0, got -1"),
        ({"top_p": 0}, r"top_p must be in \(0, 1\], got 0"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\], got 1.5"),
        ({"top_k": -2}, "top_k must be >= 0, got -2"),
        ({"min_p": 2}, r"min_p must be in \[0, 1\], got 2"),
        ({"max_tokens": -1}, "max_tokens must be >= 0, got -1"),
    ],
)
def test_bad_params(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(InputError, match=message):
        SamplingParams(**kwargs)  # type: ignore[arg-type]


def test_mask_gives_the_renormalised_distribution_on_the_allowed_set() -> None:
    """Exactness: masked sampling probabilities == unmasked probabilities renormalised over the allowed tokens."""
    torch.manual_seed(0)
    logits = torch.randn(50) * 3
    mask = torch.rand(50) < 0.3
    masked = torch.softmax(apply_mask(logits, mask), -1)
    full = torch.softmax(logits, -1)
    expected = torch.where(mask, full, 0.0) / full[mask].sum()
    torch.testing.assert_close(masked, expected, rtol=1e-6, atol=1e-7)
    # temperature and the filters act after masking: top_k=1 keeps the best *allowed* token
    best_allowed = int(torch.where(mask, logits, float("-inf")).argmax())
    assert sample(logits, SamplingParams(top_k=1), make_generator(0), mask) == best_allowed
    assert sample(logits, SamplingParams(temperature=0), make_generator(0), mask) == best_allowed
    drawn = {sample(logits, SamplingParams(temperature=2.0), make_generator(s), mask) for s in range(300)}
    assert drawn <= set(mask.nonzero().flatten().tolist())
    # logprobs of the masked logits: -inf off the allowed set, a distribution on it
    lp = logprobs(apply_mask(logits, mask))
    assert torch.isinf(lp[~mask]).all() and abs(float(lp[mask].exp().sum()) - 1) < 1e-5


def test_mask_bad_input() -> None:
    with pytest.raises(ValueError, match="token mask allows no token"):
        apply_mask(LOGITS, torch.zeros(5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"token mask of shape \(4,\) does not match logits of shape \(5,\)"):
        apply_mask(LOGITS, torch.ones(4, dtype=torch.bool))


def test_logit_bias_moves_greedy_and_sampled_choices() -> None:
    from gptoss.sampling import apply_bias

    logits = torch.tensor([0.0, 5.0, 1.0, 2.0])
    gen = torch.Generator().manual_seed(0)
    assert sample(logits, SamplingParams(temperature=0), gen) == 1
    assert sample(logits, SamplingParams(temperature=0, logit_bias=((1, -100.0),)), gen) == 3
    assert sample(logits, SamplingParams(temperature=0, logit_bias=((0, 100.0),)), gen) == 0
    forced = SamplingParams(temperature=1.0, logit_bias=((2, 100.0),))
    assert {sample(logits, forced, gen) for _ in range(20)} == {2}
    assert torch.equal(apply_bias(logits, ((9, 50.0), (3, 1.0))), torch.tensor([0.0, 5.0, 1.0, 3.0]))  # 9: no such id


def test_logit_bias_ids_must_be_non_negative() -> None:
    with pytest.raises(InputError, match="logit_bias token ids must be >= 0"):
        SamplingParams(logit_bias=((-1, 1.0),))
