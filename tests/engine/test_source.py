"""ModelSource: the real model behind the seam gives the model's own tokens, log-probabilities and errors."""

from __future__ import annotations

import pytest
import torch

import gptoss
from gptoss.engine import ModelSource, TokenEvent, output_budget
from gptoss.errors import InputError
from gptoss.random_checkpoint import write_random_checkpoint
from gptoss.sampling import SamplingParams, logprobs


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> gptoss.Model:
    path = write_random_checkpoint(tmp_path_factory.mktemp("src") / "tiny", gptoss.PRESETS["tiny"], "hf", seed=1)
    return gptoss.load(path, dtype=torch.float32, context_length=64)


def test_tokens_equal_the_models_own_generate(model: gptoss.Model) -> None:
    p = SamplingParams(temperature=0.8, seed=3, max_tokens=12)
    events = [e for e in ModelSource(model).generate([1, 2, 3, 4], p) if e is not None]
    assert [e.token for e in events] == list(model.generate_with([1, 2, 3, 4], p))
    assert all(e.logprob is None and e.top_logprobs == () for e in events)


def test_logprobs_are_the_untempered_log_softmax(model: gptoss.Model) -> None:
    prompt = [5, 6, 7]
    p = SamplingParams(temperature=0.0, max_tokens=1)
    (event,) = [e for e in ModelSource(model).generate(prompt, p, top_logprobs=3) if e is not None]
    expected = logprobs(model.logits(prompt)[-1])
    assert event.logprob == pytest.approx(float(expected[event.token]), abs=1e-5)
    top_ids = [t for t, _ in event.top_logprobs]
    assert top_ids == torch.topk(expected, 3).indices.tolist()
    assert top_ids[0] == event.token  # greedy picks the most likely


def test_chosen_logprob_only_when_top_is_zero(model: gptoss.Model) -> None:
    p = SamplingParams(temperature=0.0, max_tokens=2)
    events = [e for e in ModelSource(model).generate([1], p, top_logprobs=0) if e is not None]
    assert all(isinstance(e, TokenEvent) and e.logprob is not None and e.top_logprobs == () for e in events)


def test_long_prompts_yield_a_step_per_prefill_chunk(model: gptoss.Model) -> None:
    steps = list(ModelSource(model, prefill_chunk=8).generate(list(range(20)), SamplingParams(max_tokens=1)))
    assert steps[:2] == [None, None]  # chunks 0-7 and 8-15; the last chunk's step yields the first token
    assert len(steps) == 3 and steps[2] is not None


def test_stops_after_a_stop_token(model: gptoss.Model) -> None:
    first = next(e for e in ModelSource(model).generate([1, 2], SamplingParams(temperature=0, max_tokens=5)) if e)
    p = SamplingParams(temperature=0, max_tokens=5, stop_tokens=frozenset({first.token}))
    assert [e.token for e in ModelSource(model).generate([1, 2], p) if e] == [first.token]


def test_bad_requests_fail_before_any_work(model: gptoss.Model) -> None:
    source = ModelSource(model)
    with pytest.raises(InputError, match="token id 5000 at index 1 is outside the vocabulary"):
        source.generate([1, 5000], SamplingParams())
    with pytest.raises(InputError, match="prompt of 60 tokens \\+ max_tokens 10 exceeds the context limit of 64"):
        source.generate([1] * 60, SamplingParams(max_tokens=10))
    assert source.context_length == 64


def test_output_budget() -> None:
    assert output_budget(10, SamplingParams(), 64) == 54
    assert output_budget(10, SamplingParams(max_tokens=3), 64) == 3
    with pytest.raises(InputError, match="context overflow: prompt of 64 tokens exceeds the context limit of 64"):
        output_budget(64, SamplingParams(), 64)
