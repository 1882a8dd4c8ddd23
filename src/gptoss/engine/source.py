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

from gptoss.errors import InputError
from gptoss.sampling import SamplingParams

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
        self, token_ids: Sequence[int], params: SamplingParams, top_logprobs: int | None = None
    ) -> Iterator[TokenEvent | None]:
        """Raises InputError at once for a request it cannot serve; the iterator does the work lazily.

        `top_logprobs` None: no log-probabilities; 0: the chosen token's; k: also the k most likely tokens'.
        """
        ...


def output_budget(prompt_len: int, params: SamplingParams, context_length: int) -> int:
    """How many tokens may be generated; InputError when the prompt (plus max_tokens) does not fit the context."""
    room = context_length - prompt_len
    if room <= 0 or (params.max_tokens is not None and params.max_tokens > room):
        asked = "" if params.max_tokens is None else f" + max_tokens {params.max_tokens}"
        raise InputError(
            f"context overflow: prompt of {prompt_len} tokens{asked} exceeds the context limit of {context_length}"
        )
    return room if params.max_tokens is None else params.max_tokens


class ModelSource:
    """A loaded `gptoss.Model` behind the TokenSource seam: cached prefill in chunks, then one token per step."""

    def __init__(self, model: Model, prefill_chunk: int = 256) -> None:
        self.model = model
        self.prefill_chunk = prefill_chunk

    @property
    def context_length(self) -> int:
        return self.model.context_length

    def generate(
        self, token_ids: Sequence[int], params: SamplingParams, top_logprobs: int | None = None
    ) -> Iterator[TokenEvent | None]:
        tokens = self.model.check_tokens(token_ids)
        budget = output_budget(len(tokens), params, self.context_length)
        return self._decode(tokens, params, budget, top_logprobs)

    def _decode(
        self, tokens: torch.Tensor, params: SamplingParams, budget: int, top_logprobs: int | None
    ) -> Iterator[TokenEvent | None]:
        import torch

        from gptoss.sampling import make_generator, sample

        generator = make_generator(params.seed)
        cache = self.model.new_cache()
        logits = torch.empty(0)
        for start in range(0, len(tokens), self.prefill_chunk):  # chunk by chunk, so a cancel lands between chunks
            logits = self.model.prefill(cache, tokens[start : start + self.prefill_chunk])
            if start + self.prefill_chunk < len(tokens):
                yield None
        for _ in range(budget):
            token = sample(logits, params, generator)
            yield token_event(token, logits, top_logprobs)
            if token in params.stop_tokens:
                return
            logits = self.model.prefill(cache, torch.tensor([token], device=self.model.device))


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
