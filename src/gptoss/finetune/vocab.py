"""The exact sparse-vocabulary loss (`--sparse-vocab`, full fine-tuning): only the tokens the data uses get rows.

With o200k_harmony's 201,088 tokens the unembedding dominates a small model's training step. When the embedding
and unembedding rows of every token the data never uses are held at zero, those tokens' logits are exactly 0, so
the full-vocabulary softmax is the softmax over the used rows with (number of unused tokens)·e^0 added to its
denominator: log Z = logaddexp(logsumexp(used logits), log(#unused)). Training keeps only the used rows (compact
(U, H) tensors, token ids mapped to their positions) and the saved checkpoint scatters them back among zero rows,
so the saved full-vocabulary model computes exactly the loss that was trained.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from gptoss.errors import InputError


@dataclass(frozen=True)
class SparseVocab:
    used: torch.Tensor  # (U,) sorted token ids that keep a row
    size: int  # V, the full vocabulary

    @classmethod
    def of(cls, sequences: Iterable[Sequence[int]], size: int, device: str | torch.device = "cpu") -> SparseVocab:
        ids = sorted({t for seq in sequences for t in seq})
        if not ids:
            raise InputError("--sparse-vocab: the data has no tokens")
        if ids[-1] >= size or ids[0] < 0:
            raise InputError(f"--sparse-vocab: token {ids[-1]} is outside the model's vocabulary of {size}")
        return cls(torch.tensor(ids, dtype=torch.long, device=device), size)

    @property
    def unused(self) -> int:
        return self.size - int(self.used.numel())

    def compact(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids -> their rows in the compact tensors; a token without a row is an error naming it."""
        pos = torch.searchsorted(self.used, tokens).clamp(max=len(self.used) - 1)
        missing = self.used[pos] != tokens
        if bool(missing.any()):
            raise InputError(f"--sparse-vocab: token {int(tokens[missing][0])} is not in the trained vocabulary")
        return pos

    def rows(self, full: torch.Tensor) -> torch.Tensor:
        return full[self.used]  # (U, H)

    def expand(self, rows: torch.Tensor) -> torch.Tensor:
        """(U, H) rows -> the (V, H) full tensor, zero in the rows of unused tokens."""
        out = torch.zeros((self.size, rows.shape[1]), dtype=rows.dtype, device=rows.device)
        out[self.used] = rows
        return out


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor, unused: int) -> torch.Tensor:
    """Sum over rows of -log softmax(full logits)[target], where the full logits are `logits` (N, U) followed by
    `unused` zeros; `targets` index the used columns."""
    lse = torch.logsumexp(logits, dim=-1)  # (N,)
    if unused:
        lse = torch.logaddexp(lse, torch.full_like(lse, math.log(unused)))
    return (lse - logits.gather(1, targets.unsqueeze(1)).squeeze(1)).sum()
