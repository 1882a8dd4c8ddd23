"""The sparse-vocabulary loss: exact against the full-vocabulary loss (value and every gradient) when the unused
rows are zero, the compact <-> full mapping, the saved checkpoint, and the errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import gptoss
from gptoss.cli.__main__ import main
from gptoss.config import PRESETS
from gptoss.errors import InputError
from gptoss.finetune.full import FullParams
from gptoss.finetune.objective import differentiable_ops, loss_sum
from gptoss.finetune.vocab import SparseVocab, cross_entropy_sum
from gptoss.random_checkpoint import write_random_checkpoint

TOKENS = [5, 17, 900, 17, 33, 5, 1000, 42, 33, 17, 5, 900, 42, 1000, 7, 7]
MASK = [0, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("vocab") / "tiny", PRESETS["tiny"], "hf", seed=3)


def test_cross_entropy_sum_equals_full_softmax_with_zero_logits() -> None:
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(6, 9, generator=g) * 3, torch.randint(0, 9, (6,), generator=g)
    full = torch.cat([logits, torch.zeros(6, 1000)], dim=1)
    expected = F.cross_entropy(full, targets, reduction="sum")
    torch.testing.assert_close(cross_entropy_sum(logits, targets, 1000), expected, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(cross_entropy_sum(logits, targets, 0), F.cross_entropy(logits, targets, reduction="sum"))


def grads(tiny: Path, vocab: SparseVocab | None) -> tuple[float, dict[str, torch.Tensor]]:
    tr = gptoss.load(tiny, dtype=torch.float32).transformer
    full = FullParams(tr, vocab)
    used = SparseVocab.of([TOKENS], 1024).used
    if vocab is None:  # hold the unused rows at zero, as the sparse model's saved checkpoint has them
        unused = torch.ones(1024, dtype=torch.bool)
        unused[used] = False
        with torch.no_grad():
            for name in ("embedding", "unembedding"):
                full.params[name][unused] = 0.0
    tr.adapter = full
    with differentiable_ops():
        loss, n = loss_sum(tr, TOKENS, MASK, vocab=vocab)
    assert n == sum(MASK[1:])
    loss.backward()
    out = {k: p.grad for k, p in full.params.items() if p.grad is not None}
    if vocab is None:
        out = {k: g[used] if k in ("embedding", "unembedding") else g for k, g in out.items()}
    return loss.item(), out


def test_sparse_loss_and_gradients_are_exact_against_the_full_vocabulary(tiny: Path) -> None:
    vocab = SparseVocab.of([TOKENS], 1024)
    assert vocab.unused == 1024 - 7
    full_loss, full_grads = grads(tiny, None)
    sparse_loss, sparse_grads = grads(tiny, vocab)
    assert math.isclose(sparse_loss, full_loss, rel_tol=1e-6)
    assert sparse_grads.keys() == full_grads.keys() and len(full_grads) > 10
    for name, g in full_grads.items():
        torch.testing.assert_close(sparse_grads[name], g, rtol=1e-5, atol=1e-6, msg=name)


def test_compact_and_expand() -> None:
    vocab = SparseVocab.of([[9, 3], [3, 7]], 12)
    assert vocab.used.tolist() == [3, 7, 9] and vocab.unused == 9
    assert vocab.compact(torch.tensor([7, 3, 9, 9])).tolist() == [1, 0, 2, 2]
    rows = torch.arange(6.0).reshape(3, 2)
    full = vocab.expand(rows)
    assert full.shape == (12, 2) and torch.equal(vocab.rows(full), rows) and full.abs().sum() == rows.sum()


def test_errors_name_the_token() -> None:
    vocab = SparseVocab.of([[3, 7]], 12)
    with pytest.raises(InputError, match="token 5 is not in the trained vocabulary"):
        vocab.compact(torch.tensor([3, 5]))
    with pytest.raises(InputError, match="token 12 is outside the model's vocabulary of 12"):
        SparseVocab.of([[1, 12]], 12)
    with pytest.raises(InputError, match="the data has no tokens"):
        SparseVocab.of([[]], 12)


def test_finetune_sparse_vocab_saves_zero_rows_and_the_trained_loss(
    harmony_model: Path, qa_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sparse"
    argv = ["finetune", "--model", str(harmony_model), "--data", str(qa_data), "--out", str(out), "--quiet"]
    assert main([*argv, "--full", "--sparse-vocab", "--max-steps", "3", "--lr", "1e-3"]) == 0
    tensors = load_file(out / "model.safetensors")
    used = (tensors["lm_head.weight"].abs().sum(1) > 0).nonzero().squeeze(1)
    embedded = (tensors["model.embed_tokens.weight"].abs().sum(1) > 0).nonzero().squeeze(1)
    assert 50 < len(used) < 1000 and torch.equal(used, embedded)


def test_sparse_vocab_needs_full(harmony_model: Path, qa_data: Path, tmp_path: Path, capsys) -> None:
    argv = ["finetune", "--model", str(harmony_model), "--data", str(qa_data), "--out", str(tmp_path), "--quiet"]
    assert main([*argv, "--sparse-vocab"]) != 0
    assert "--sparse-vocab needs --full" in capsys.readouterr().err
