"""The demo eval's scoring: a generator that replays the training conversations scores 100% everywhere, one that
leaves messages open or calls with wrong arguments scores 0."""

from __future__ import annotations

import pytest

from gptoss.demo.data import Sample, generate
from gptoss.demo.evaluate import evaluate_sample, summarize
from gptoss.harmony import HarmonyEncodingName, load_harmony_encoding
from gptoss.harmony.tokenizer import CALL, RETURN
from gptoss.server.conversation import NO_AUTO_DROP


@pytest.fixture(scope="module")
def encoding():
    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


def replay(encoding, s: Sample, corrupt: bool = False):
    """The generator a perfect model would be: the training render's continuation of whatever prompt it gets."""
    full = encoding.render_conversation_for_training(s.conversation(), NO_AUTO_DROP)

    def generate_turn(prompt: list[int]) -> list[int]:
        assert full[: len(prompt)] == prompt, "the eval's prompt must be a prefix of the training render"
        rest = full[len(prompt) :]
        end = next(i for i, t in enumerate(rest) if t in (CALL, RETURN)) + 1
        out = rest[:end]
        if corrupt:  # wrong digits in the call and answer
            digits = encoding.encode("7", allowed_special=set())
            out = [digits[0] if encoding.decode([t]).isdigit() else t for t in out]
        return out

    return generate_turn


def test_a_perfect_generator_scores_everything(encoding):
    samples = generate(24, seed=5)
    outcomes = [evaluate_sample(replay(encoding, s), encoding, s) for s in samples]
    assert all(o.correct and o.closed for o in outcomes)
    table = summarize(outcomes)
    assert {k: v["correct"] for k, v in table.items() if isinstance(v, dict)} == {
        "arithmetic": 1.0, "chat": 1.0, "echo": 1.0, "extraction": 1.0, "function": 1.0,
    }  # fmt: skip
    assert table["median_analysis_low"] < table["median_analysis_medium"] < table["median_analysis_high"]


def test_wrong_numbers_or_open_messages_fail(encoding):
    samples = [s for s in generate(24, seed=5) if s.task.family == "arithmetic"]
    outcomes = [evaluate_sample(replay(encoding, s, corrupt=True), encoding, s) for s in samples]
    assert not any(o.correct for o in outcomes)
    rambling = evaluate_sample(lambda prompt: [200005] * 10, encoding, samples[0])
    assert not rambling.closed and not rambling.correct
