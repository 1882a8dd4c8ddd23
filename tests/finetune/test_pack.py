"""Packed training: several conversations in one forward pass give the sum of their single-conversation losses and
the same gradients (no attention across conversations, positions restart), on sliding and full layers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gptoss
from gptoss.cli.__main__ import main
from gptoss.config import PRESETS
from gptoss.finetune.data import Example
from gptoss.finetune.full import FullParams
from gptoss.finetune.objective import differentiable_ops, loss_sum, loss_sum_packed
from gptoss.finetune.train import packs
from gptoss.finetune.vocab import SparseVocab
from gptoss.random_checkpoint import write_random_checkpoint


def example(n: int, seed: int) -> Example:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 1000, (n,), generator=g).tolist()
    mask = (torch.rand(n, generator=g) < 0.6).long().tolist()
    return Example(tokens, mask, seed)


# Longer than the tiny preset's sliding window, so the band matters; different lengths, so padding does; more than
# segmented_attention's group of 4, so the regrouping by length does.
EXAMPLES = [example(150, 1), example(37, 2), example(90, 3), example(20, 4), example(70, 5)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("pack") / "tiny", PRESETS["tiny"], "hf", seed=5)


def run(tiny: Path, packed: bool, vocab: SparseVocab | None, checkpointing: bool = False):
    tr = gptoss.load(tiny, dtype=torch.float32).transformer
    full = FullParams(tr, vocab)
    tr.adapter = full
    with differentiable_ops():
        if packed:
            loss, n = loss_sum_packed(tr, EXAMPLES, checkpointing, vocab)
        else:
            parts = [loss_sum(tr, e.tokens, e.mask, checkpointing, vocab) for e in EXAMPLES]
            loss, n = torch.stack([p[0] for p in parts]).sum(), sum(p[1] for p in parts)
    loss.backward()
    return loss.item(), n, {k: p.grad for k, p in full.params.items() if p.grad is not None}


@pytest.mark.parametrize("sparse", [False, True])
def test_packed_loss_and_gradients_equal_the_single_conversation_sums(tiny: Path, sparse: bool) -> None:
    assert PRESETS["tiny"].sliding_window < 150
    vocab = SparseVocab.of([e.tokens for e in EXAMPLES], PRESETS["tiny"].vocab_size) if sparse else None
    loss, n, grads = run(tiny, False, vocab)
    p_loss, p_n, p_grads = run(tiny, True, vocab)
    assert p_n == n == sum(sum(e.mask[1:]) for e in EXAMPLES)
    assert p_loss == pytest.approx(loss, rel=1e-5)
    assert grads.keys() == p_grads.keys()
    for k in grads:
        torch.testing.assert_close(p_grads[k], grads[k], rtol=1e-4, atol=2e-5, msg=k)


def test_packed_with_checkpointing_recomputes_per_conversation_attention(tiny: Path) -> None:
    loss, _, grads = run(tiny, False, None)
    c_loss, _, c_grads = run(tiny, True, None, checkpointing=True)
    assert c_loss == pytest.approx(loss, rel=1e-5)
    for k in grads:
        torch.testing.assert_close(c_grads[k], grads[k], rtol=1e-4, atol=2e-5, msg=k)


def test_packing_leaks_nothing_across_conversations(tiny: Path) -> None:
    """Changing the first conversation's tokens leaves the others' losses unchanged."""
    tr = gptoss.load(tiny, dtype=torch.float32).transformer
    with torch.no_grad(), differentiable_ops():
        base, _ = loss_sum_packed(tr, EXAMPLES[1:])
        other = example(150, 99)
        changed, _ = loss_sum_packed(tr, [Example(other.tokens, [0] * 150, 0), *EXAMPLES[1:]])
    assert changed.item() == pytest.approx(base.item(), rel=1e-5)


def test_packs_group_consecutive_conversations_up_to_the_limit() -> None:
    a, b, c = EXAMPLES[:3]
    assert packs([a, b, c], 0) == [[a], [b], [c]]
    assert packs([a, b, c], 200) == [[a, b], [c]]
    assert packs([a, b, c], 100) == [[a], [b], [c]]  # a longer conversation goes alone
    assert packs(EXAMPLES, 1000) == [EXAMPLES]


def test_pack_tokens_must_not_be_negative(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["finetune", "--model", "x", "--data", "y", "--out", str(tmp_path), "--full", "--pack-tokens", "-1"]
    assert main(argv) != 0
    assert "--pack-tokens must be 0 (off) or positive, got -1" in capsys.readouterr().err
