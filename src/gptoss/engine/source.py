"""What the engine drives: a `TokenSource` turns (prompt ids, sampling params) into a lazy stream of `TokenEvent`s.

`generate` validates eagerly (so a bad request fails in the caller's thread, before anything is queued) and returns
a lazy iterator that the engine's worker thread advances one step at a time, checking for cancellation between
steps. A step yields a token, or None for work that produced none (a prefill chunk of a long prompt).
`ModelSource` adapts `gptoss.Model`; tests plug in a scripted source that replays fixed token sequences.
A continuous-batching engine would replace the per-request iterator with a batched step over the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gptoss.runtime import output_budget as output_budget  # re-exported for token sources
from gptoss.sampling import SamplingParams, TokenConstraint

if TYPE_CHECKING:
    import torch

    from gptoss.runtime import Model


@dataclass(frozen=True)
class TokenEvent:
    token: int
    logprob: float | None = None  # untempered log-probability of `token`, when asked for
    top_logprobs: tuple[tuple[int, float], ...] = ()  # the most likely alternatives, best first


class TokenSource(Protocol):
    @property
    def context_length(self) -> int: ...

    def generate(
        self,
        token_ids: Sequence[int],
        params: SamplingParams,
        top_logprobs: int | None = None,
        constraint: TokenConstraint | None = None,
    ) -> Iterator[TokenEvent | None]:
        """Raises InputError at once for a request it cannot serve; the iterator does the work lazily.

        `top_logprobs` None: no log-probabilities; 0: the chosen token's; k: also the k most likely tokens'.
        `constraint`: this sequence's allowed-token rule, consulted before each token (logprobs are then those of
        the masked, renormalised distribution).
        """
        ...


class ModelSource:
    """A loaded `gptoss.Model` behind the TokenSource seam: cached prefill in chunks, then one token per step."""

    def __init__(self, model: Model, prefill_chunk: int = 256) -> None:
        self.model = model
        self.prefill_chunk = prefill_chunk

    @property
    def context_length(self) -> int:
        return self.model.context_length

    def generate(
        self,
        token_ids: Sequence[int],
        params: SamplingParams,
        top_logprobs: int | None = None,
        constraint: TokenConstraint | None = None,
    ) -> Iterator[TokenEvent | None]:
        steps = self.model.steps(token_ids, params, self.prefill_chunk, constraint)  # validates now
        return (None if step is None else token_event(*step, top_logprobs) for step in steps)


def token_event(token: int, logits: torch.Tensor, top_logprobs: int | None) -> TokenEvent:
    if top_logprobs is None:
        return TokenEvent(token)
    import torch

    from gptoss.sampling import logprobs

    lp = logprobs(logits)
    top: tuple[tuple[int, float], ...] = ()
    if top_logprobs > 0:
        values, ids = torch.topk(lp, top_logprobs)
        top = tuple((int(i), float(v)) for i, v in zip(ids, values, strict=True))
    return TokenEvent(token, float(lp[token]), top)
