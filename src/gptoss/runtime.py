"""The public model object: load a checkpoint, get logits, generate token ids. Knows nothing of text."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from gptoss import ops
from gptoss.config import ModelConfig
from gptoss.errors import InputError
from gptoss.kv_cache import KVCache
from gptoss.model import Transformer, Weights
from gptoss.prefault import populate
from gptoss.sampling import SamplingParams, TokenConstraint, apply_mask, make_generator, sample
from gptoss.weights import load_weights, open_checkpoint

PREFILL_CHUNK = 512  # tokens per prefill step: bounds activation memory on long prompts; 512 keeps the GEMMs efficient


class Model:
    def __init__(self, transformer: Transformer, device: torch.device, dtype: torch.dtype, context_length: int):
        self.transformer = transformer
        self.config: ModelConfig = transformer.cfg
        self.device = device
        self.dtype = dtype
        self.context_length = context_length

    def check_tokens(self, token_ids: Sequence[int]) -> torch.Tensor:
        if len(token_ids) == 0:
            raise InputError("empty prompt: at least one token id is needed")
        V = self.config.vocab_size
        for i, t in enumerate(token_ids):
            if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < V:
                raise InputError(f"token id {t!r} at index {i} is outside the vocabulary (0..{V - 1})")
        return torch.tensor(list(token_ids), dtype=torch.long, device=self.device)

    @torch.inference_mode()
    def logits(self, token_ids: Sequence[int]) -> torch.Tensor:
        """Full forward over the whole sequence, no cache -> (T, V) float32 logits."""
        tokens = self.check_tokens(token_ids)
        if len(tokens) > self.context_length:
            raise InputError(
                f"context overflow: {len(tokens)} tokens exceed the context limit of {self.context_length}"
            )
        positions = torch.arange(len(tokens), device=self.device)
        return self.transformer.unembed(self.transformer.forward(tokens, positions, cache=None))

    def new_cache(self) -> KVCache:
        return KVCache(self.config, self.context_length, self.dtype, self.device)

    @torch.inference_mode()
    def prefill(self, cache: KVCache, tokens: torch.Tensor, chunk: int = PREFILL_CHUNK) -> torch.Tensor:
        """Feeds tokens (T,) through the cache in chunks -> (V,) logits of the last token."""
        cache.positions(len(tokens))  # fail on overflow before any work
        h = torch.empty(0)
        for start in range(0, len(tokens), chunk):
            h = self._feed(cache, tokens[start : start + chunk])
        return self.transformer.unembed(h[-1:])[0]

    def _feed(self, cache: KVCache, tokens: torch.Tensor) -> torch.Tensor:
        """One chunk through the cache -> its final hidden states (T, H); no unembedding."""
        h = self.transformer.forward(tokens, cache.positions(len(tokens)), cache)
        cache.position += len(tokens)
        return h

    def generate(
        self,
        token_ids: Sequence[int],
        max_tokens: int | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float = 0.0,
        seed: int | None = None,
        stop_tokens: Sequence[int] = (),
    ) -> Iterator[int]:
        """Yields sampled token ids; stops after yielding a stop token, after max_tokens, or at the context limit."""
        params = SamplingParams(temperature, top_p, top_k, min_p, seed, max_tokens, frozenset(stop_tokens))
        return self.generate_with(token_ids, params)

    def generate_with(
        self, token_ids: Sequence[int], params: SamplingParams, constraint: TokenConstraint | None = None
    ) -> Iterator[int]:
        return (step[0] for step in self.steps(token_ids, params, constraint=constraint) if step is not None)

    def steps(
        self,
        token_ids: Sequence[int],
        params: SamplingParams,
        prefill_chunk: int = PREFILL_CHUNK,
        constraint: TokenConstraint | None = None,
    ) -> Iterator[tuple[int, torch.Tensor] | None]:
        """The decode loop, one step at a time: None after each prefill chunk but the last (a point where a caller
        may stop early), then (token, the logits it was sampled from, disallowed tokens at -inf) per generated
        token. Validates eagerly."""
        tokens = self.check_tokens(token_ids)
        budget = output_budget(len(tokens), params, self.context_length)
        return self._steps(tokens, params, budget, prefill_chunk, constraint)

    @torch.inference_mode()
    def _steps(
        self,
        tokens: torch.Tensor,
        params: SamplingParams,
        budget: int,
        chunk: int,
        constraint: TokenConstraint | None,
    ) -> Iterator[tuple[int, torch.Tensor] | None]:
        generator = make_generator(params.seed, self.device)
        cache = self.new_cache()
        h = torch.empty(0)
        for start in range(0, len(tokens), chunk):
            h = self._feed(cache, tokens[start : start + chunk])
            if start + chunk < len(tokens):
                yield None
        logits = self.transformer.unembed(h[-1:])[0]  # only the last prompt token's logits are ever needed
        for _ in range(budget):
            if constraint is not None:
                logits = apply_mask(logits, constraint.mask())
            token = sample(logits, params, generator)
            if constraint is not None:
                constraint.advance(token)  # may start the next mask now, while the forward below runs
            yield token, logits
            if token in params.stop_tokens:
                return
            logits = self.prefill(cache, torch.tensor([token], device=self.device))


def output_budget(prompt_len: int, params: SamplingParams, context_length: int) -> int:
    """How many tokens may be generated; InputError when the prompt (plus max_tokens) does not fit the context."""
    room = context_length - prompt_len
    if room <= 0 or (params.max_tokens is not None and params.max_tokens > room):
        asked = "" if params.max_tokens is None else f" + max_tokens {params.max_tokens}"
        raise InputError(
            f"context overflow: prompt of {prompt_len} tokens{asked} exceeds the context limit of {context_length}"
        )
    return room if params.max_tokens is None else params.max_tokens


def per_token_tensors(w: Weights) -> Iterator[torch.Tensor]:
    """Every weight a decoded token may read: all layers (every expert) and the unembedding, not the embedding."""
    for layer in w.layers:
        yield from vars(layer.attn).values()
        yield from vars(layer.moe).values()
    yield w.norm
    yield w.unembedding


def load(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    context_length: int | None = None,
) -> Model:
    """Loads a gpt-oss checkpoint (Hugging Face root or `original/` folder). dtype None keeps the checkpoint's
    (bf16); context_length None allows the model's full trained context (131072 for the released models).
    device "cuda" (or "cuda:N") runs the GPU path (gptoss.gpu); a RuntimeError says why when it cannot."""
    ckpt = open_checkpoint(path)
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device {str(device)!r}: gptoss runs on 'cpu' or 'cuda'")
    if dev.type == "cuda":
        from gptoss.gpu import require_cuda

        require_cuda(dev)  # before any weight is read
    dt = dtype or torch.bfloat16
    limit = context_length or ckpt.config.max_context
    if not 0 < limit <= ckpt.config.max_context:
        raise InputError(f"context_length {limit} must be in 1..{ckpt.config.max_context} for this model")
    weights = load_weights(ckpt, dt, dev)
    if dev.type == "cuda":  # the weights were copied as they are stored: bf16, and MXFP4 blocks + scales
        from gptoss.gpu.runtime import load_device

        return load_device(ckpt.config, weights, dev, dt, limit)
    populate(per_token_tensors(weights))
    if ops.BACKEND == "native" and dt == torch.bfloat16 and dev.type == "cpu":
        ops.native.linear_gemm_bf16()  # measures which prefill GEMM is faster here now, not in the first prompt
    return Model(Transformer(ckpt.config, weights), dev, dt, limit)
