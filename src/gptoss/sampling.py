"""Sampling as pure functions of (logits, params, generator): no hidden state, so a seed reproduces a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from gptoss.errors import InputError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus: keep the smallest set of tokens whose probability reaches top_p
    top_k: int = 0  # 0 = off
    min_p: float = 0.0  # drop tokens whose probability is below min_p * p(most likely)
    seed: int | None = None
    max_tokens: int | None = None  # None = until a stop token or the context limit
    stop_tokens: frozenset[int] = field(default_factory=frozenset)
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit) before everything else

    def __post_init__(self) -> None:
        checks = [
            (self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}"),
            (0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p}"),
            (
                self.max_tokens is None or self.max_tokens >= 0,
                f"max_tokens must be >= 0, got {self.max_tokens}",
            ),
            (all(t >= 0 for t, _ in self.logit_bias), f"logit_bias token ids must be >= 0, got {self.logit_bias}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)


class TokenConstraint(Protocol):
    """One sequence's rule for which tokens may come next (e.g. a grammar). The decode loop calls `mask()` before
    sampling that sequence's next token and `advance(token)` right after choosing it, before the next forward pass,
    so an implementation may compute the following mask while that forward pass runs."""

    def mask(self) -> torch.Tensor | None:
        """Bool (V,) tensor, True where the token is allowed; None when anything is."""
        ...

    def advance(self, token: int) -> None: ...


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g


def apply_bias(logits: torch.Tensor, bias: tuple[tuple[int, float], ...]) -> torch.Tensor:
    """(V,) logits plus OpenAI's logit_bias (greedy decoding sees it too; reported logprobs do not). Ids past the
    model's vocabulary are skipped: the model cannot produce them, biased or not."""
    inside = [(t, b) for t, b in bias if t < logits.shape[-1]]
    if not inside:
        return logits
    ids = torch.tensor([t for t, _ in inside], device=logits.device)
    values = torch.tensor([b for _, b in inside], dtype=torch.float32, device=logits.device)
    return logits.float().index_add(-1, ids, values)


def apply_mask(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(V,) logits with the disallowed tokens at -inf: every later step (temperature, filters, softmax, logprobs)
    then sees the renormalised distribution over the allowed set."""
    if mask is None:
        return logits
    if mask.shape != logits.shape[-1:]:
        shapes = f"{tuple(mask.shape)} does not match logits of shape {tuple(logits.shape)}"
        raise ValueError(f"token mask of shape {shapes}")
    if not bool(mask.any()):
        raise ValueError("token mask allows no token")
    return logits.float().masked_fill(~mask.to(logits.device), float("-inf"))  # constraints build masks on the CPU


def filter_logits(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """(V,) logits -> (V,) temperature-scaled logits with the filtered-out tokens at -inf."""
    x = logits.float() / p.temperature
    if p.top_k and p.top_k < x.shape[-1]:
        kth = torch.topk(x, p.top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if p.min_p > 0:
        probs = torch.softmax(x, dim=-1)
        x = x.masked_fill(probs < p.min_p * probs.max(), float("-inf"))
    if p.top_p < 1:
        sorted_x, order = torch.sort(x, descending=True)
        sorted_probs = torch.softmax(sorted_x, dim=-1)
        drop_sorted = sorted_probs.cumsum(dim=-1) - sorted_probs >= p.top_p  # the tokens before it already suffice
        drop = torch.empty_like(drop_sorted).scatter_(0, order, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return x


def sample(
    logits: torch.Tensor, p: SamplingParams, generator: torch.Generator, mask: torch.Tensor | None = None
) -> int:
    """(V,) logits -> one token id, among the tokens `mask` allows (all when None)."""
    logits = apply_mask(apply_bias(logits, p.logit_bias), mask)
    if p.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(filter_logits(logits, p), dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def logprobs(logits: torch.Tensor) -> torch.Tensor:
    """Untempered log-probabilities, as OpenAI's APIs report them."""
    return torch.log_softmax(logits.float(), dim=-1)
