"""A loaded model behind the batched seam: many sequences, one forward pass per step over all their new tokens.

Dense projections, the router and the experts run once over the step's flat batch (each weight is read once per
step, not once per sequence); attention runs per sequence over its own blocks of the paged cache (engine/paged.py).
Each sequence samples with its own generator and constraint exactly as `Model.steps` does, so with greedy fp32
decoding a request gets the tokens `Model.generate` gives it alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from gptoss.engine.blocks import BlockPool
from gptoss.engine.paged import BatchCache, PagedStorage, Segment
from gptoss.engine.scheduler import Scheduler, SchedulerStats, Seq
from gptoss.engine.source import TokenEvent, token_event
from gptoss.errors import InputError
from gptoss.runtime import Model, output_budget, per_token_tensors
from gptoss.sampling import SamplingParams, TokenConstraint, apply_mask, make_generator, sample

DEFAULT_KV_FRACTION = 0.5  # of the memory available beside the weights, when no --kv-cache-gb is given


@dataclass(frozen=True)
class BatchConfig:
    max_running: int = 8
    max_step_tokens: int = 256  # tokens per forward pass: decode tokens first, then prompt chunks
    kv_cache_bytes: int | None = None  # None: default_kv_bytes(), at most what max_running full contexts need
    block_size: int = 64
    prefix_cache: bool = True
    prefill_patience: int = 4  # steps a prompt may be passed over for shorter ones before it goes first

    def __post_init__(self) -> None:
        checks = [
            (self.max_running >= 1, f"max_running must be >= 1, got {self.max_running}"),
            (self.max_step_tokens >= 1, f"max_step_tokens must be >= 1, got {self.max_step_tokens}"),
            (1 <= self.block_size <= 64, f"block_size must be in 1..64, got {self.block_size}"),
            (self.kv_cache_bytes is None or self.kv_cache_bytes > 0, "the KV cache budget must be positive"),
            (self.prefill_patience >= 0, f"prefill_patience must be >= 0, got {self.prefill_patience}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class _Request:
    params: SamplingParams
    top_logprobs: int | None
    constraint: TokenConstraint | None
    generator: torch.Generator


@dataclass(frozen=True)
class StepOutput:
    key: object
    event: TokenEvent | None  # None: the sequence ended without a new token
    done: bool
    logits: torch.Tensor | None = None  # what the token was sampled from (masked), for tests
    error: Exception | None = None  # this sequence failed (its constraint raised); the others go on


def available_memory() -> int:
    """MemAvailable (free memory plus what the kernel can reclaim), or the free pages where /proc has none."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_kv_bytes(model: Model) -> int:
    """Half of the available memory once the weights are set aside. Memory-mapped weights sit in the page cache,
    which MemAvailable counts as reclaimable: taking it for the KV cache would evict the weights."""
    if model.device.type == "cuda":  # the weights are already on the device: what it has free is beside them
        return int(torch.cuda.mem_get_info(model.device)[0] * DEFAULT_KV_FRACTION)
    weights = sum(t.nbytes for t in per_token_tensors(model.transformer.w)) + model.transformer.w.embedding.nbytes
    return int(max(0, available_memory() - weights) * DEFAULT_KV_FRACTION)


class BatchedModelSource:
    """Owns the paged KV storage and the scheduler; the engine's worker thread calls `step` in a loop."""

    def __init__(self, model: Model, config: BatchConfig | None = None) -> None:
        self.model = model
        self.config = cfg = config or BatchConfig()
        per_block = PagedStorage.block_bytes(model.config, cfg.block_size, model.dtype)
        most = cfg.max_running * -(-model.context_length // cfg.block_size) * 2  # every sequence at full context
        budget = cfg.kv_cache_bytes or default_kv_bytes(model)
        num_blocks = min(most, budget // per_block) if cfg.kv_cache_bytes is None else budget // per_block
        if num_blocks < 1:
            raise ValueError(f"a KV cache budget of {budget} bytes holds no block ({per_block} bytes each)")
        self.storage = PagedStorage(model.config, num_blocks, cfg.block_size, model.dtype, model.device)
        self.pool = BlockPool(num_blocks, cfg.prefix_cache)
        self.scheduler = Scheduler(
            self.pool, self.storage.layout, cfg.max_running, cfg.max_step_tokens, cfg.prefill_patience
        )
        self._requests: dict[int, _Request] = {}
        self._seqs: dict[object, Seq] = {}

    @property
    def context_length(self) -> int:
        return self.model.context_length

    @property
    def max_running(self) -> int:
        return self.config.max_running

    def tokens_that_fit(self) -> int:
        """The longest sequence (prompt + output) the pool holds alone."""
        lay, n, chunk = self.storage.layout, self.pool.num_blocks, self.config.max_step_tokens
        lo, hi = 0, self.context_length  # blocks_alone grows with the length: bisect for the last that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if lay.blocks_alone(mid, chunk) <= n else (lo, mid - 1)
        return lo

    def check(self, token_ids: Sequence[int], params: SamplingParams) -> int:
        """Validates a request -> its output budget; InputError when it is bad or cannot fit the KV cache alone."""
        self.model.check_tokens(token_ids)
        budget = output_budget(len(token_ids), params, self.context_length)
        fit = self.tokens_that_fit()
        need = len(token_ids) + (params.max_tokens if params.max_tokens is not None else 1)
        if need > fit:
            raise InputError(
                f"the KV cache budget holds {fit} tokens (prompt + output) for one request; this one needs {need} "
                f"({len(token_ids)} in the prompt). Shorten the prompt or max_tokens, or raise --kv-cache-gb."
            )
        return min(budget, fit - len(token_ids))

    def add(
        self,
        key: object,
        token_ids: Sequence[int],
        params: SamplingParams,
        top_logprobs: int | None = None,
        constraint: TokenConstraint | None = None,
    ) -> None:
        budget = self.check(token_ids, params)
        seq = self.scheduler.add(key, token_ids, budget)
        self._requests[id(seq)] = _Request(
            params, top_logprobs, constraint, make_generator(params.seed, self.model.device)
        )
        self._seqs[key] = seq

    def remove(self, key: object) -> None:
        seq = self._seqs.pop(key)
        self._requests.pop(id(seq))
        self.scheduler.remove(seq)

    def cached_tokens(self, key: object) -> int:
        return self._seqs[key].cached_tokens or 0

    @property
    def counts(self) -> tuple[int, int]:
        """(waiting, running) sequences."""
        return len(self.scheduler.waiting), len(self.scheduler.running)

    @property
    def stats(self) -> SchedulerStats:
        return self.scheduler.stats

    def step(self) -> list[StepOutput]:
        """One forward pass over the scheduled tokens; a StepOutput per sequence that got a token (or ended)."""
        work = self.scheduler.plan()
        if not work:
            return []
        logits = self._forward(work)
        outputs = []
        for (seq, n), row in zip(work, logits, strict=True):
            self.scheduler.commit(seq, n)
            if row is not None:
                try:
                    outputs.append(self._sample(seq, row))
                except Exception as e:  # one sequence's constraint must not fail the batch
                    outputs.append(StepOutput(seq.key, None, True, error=e))
        return outputs

    @torch.inference_mode()
    def _forward(self, work: list[tuple[Seq, int]]) -> list[torch.Tensor | None]:
        """Feeds every planned chunk -> per sequence, the logits of its last token when it reaches the end."""
        segments: list[Segment] = []
        tokens: list[int] = []
        positions: list[int] = []
        last: list[int] = []  # rows whose logits are needed
        for seq, n in work:
            segments.append(Segment(seq.blocks, len(tokens), seq.computed, n))
            tokens += seq.tokens[seq.computed : seq.computed + n]
            positions += range(seq.computed, seq.computed + n)
            if seq.computed + n == len(seq.tokens):
                last.append(len(tokens) - 1)
        t = self.model.transformer
        dev = self.model.device
        batch = BatchCache(self.storage, segments)
        h = t.forward(torch.tensor(tokens, device=dev), torch.tensor(positions, device=dev), batch)
        rows = iter(t.unembed(h[last])) if last else iter(())
        return [next(rows) if seq.computed + n == len(seq.tokens) else None for seq, n in work]

    def _sample(self, seq: Seq, logits: torch.Tensor) -> StepOutput:
        req = self._requests[id(seq)]
        if req.constraint is not None:
            logits = apply_mask(logits, req.constraint.mask())
        token = sample(logits, req.params, req.generator)
        if req.constraint is not None:
            req.constraint.advance(token)
        seq.tokens.append(token)
        done = token in req.params.stop_tokens or seq.generated >= seq.budget
        return StepOutput(seq.key, token_event(token, logits, req.top_logprobs), done, logits)
