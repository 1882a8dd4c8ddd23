"""Continuous batching, in plain Python: which sequences run, and how many tokens each feeds in the next step.

Every step, each running sequence that is decoding feeds its one new token; what is left of the step's token
budget goes to prompt chunks (oldest sequence first), so a long prompt is prefilled a chunk at a time and never
stops the decoders for more than a step. Waiting sequences are admitted (first in, first out) while there is
room: a free running slot, budget, and KV blocks (after the prefix cache has been searched for their prompt).

When a running sequence cannot get a block, the newest running sequence is preempted: its blocks go back (into
the prefix cache, so resuming it is often cheap) and it waits at the head of the queue with its tokens so far;
when re-admitted it recomputes them and goes on exactly where it was. The oldest sequence therefore always makes
progress, as long as it fits the pool alone (which `check` guarantees before a request is accepted).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from gptoss.engine.blocks import BlockPool, Layout, SeqBlocks


@dataclass
class Seq:
    """One request's progress: `tokens` (prompt then output) of which the first `computed` are in the cache."""

    key: object  # the caller's handle
    tokens: list[int]
    prompt_len: int
    budget: int  # output tokens it may still generate in all
    blocks: SeqBlocks
    computed: int = 0
    cached_tokens: int | None = None  # prompt tokens found in the prefix cache when first admitted

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.prompt_len

    @property
    def decoding(self) -> bool:
        return self.generated > 0 and self.computed == len(self.tokens) - 1


BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)  # sequences per step, for the /metrics histogram


@dataclass
class SchedulerStats:
    steps: int = 0
    step_tokens: int = 0
    step_sequences: int = 0
    batch_sizes: list[int] = field(default_factory=lambda: [0] * (len(BATCH_BUCKETS) + 1))  # per bucket, +Inf last
    preemptions: int = 0
    prompt_tokens: int = 0  # prompt tokens of admitted requests (first admission only)
    cached_tokens: int = 0  # of those, found in the prefix cache

    def observe(self, work: list[tuple[Seq, int]]) -> None:
        if not work:
            return
        self.steps += 1
        self.step_tokens += sum(n for _, n in work)
        self.step_sequences += len(work)
        self.batch_sizes[next((i for i, b in enumerate(BATCH_BUCKETS) if len(work) <= b), len(BATCH_BUCKETS))] += 1


@dataclass
class Scheduler:
    pool: BlockPool
    layout: Layout
    max_running: int
    max_step_tokens: int
    waiting: deque[Seq] = field(default_factory=deque)
    running: list[Seq] = field(default_factory=list)
    stats: SchedulerStats = field(default_factory=SchedulerStats)

    def add(self, key: object, tokens: Sequence[int], budget: int) -> Seq:
        seq = Seq(key, list(tokens), len(tokens), budget, SeqBlocks(self.layout))
        seq.blocks.checkpoint(len(tokens))
        self.waiting.append(seq)
        return seq

    def remove(self, seq: Seq) -> None:
        """A finished or cancelled sequence: its blocks go back to the pool (and the prefix cache)."""
        seq.blocks.release(self.pool)
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)

    def plan(self) -> list[tuple[Seq, int]]:
        """This step's work: (sequence, tokens it feeds from position `computed`), blocks already allocated."""
        decoders = sum(s.decoding for s in self.running)
        left = max(0, self.max_step_tokens - decoders)
        wants: dict[int, int] = {}
        for s in self.running:
            n = 1 if s.decoding else min(left, len(s.tokens) - s.computed)
            left -= 0 if s.decoding else n
            wants[id(s)] = n
        work: list[tuple[Seq, int]] = []
        preempted = False
        for s in list(self.running):  # oldest first; victims are taken from the newest end
            if s not in self.running or wants[id(s)] == 0:
                continue
            n = wants[id(s)]
            while not s.blocks.ensure(self.pool, s.computed, s.computed + n):
                victim = self.running[-1]
                self._preempt(victim)
                preempted = True
                if victim is s:
                    break
            else:
                work.append((s, n))
        if not preempted:
            work += self._admit(left)
        self.stats.observe(work)
        return work

    def _admit(self, left: int) -> list[tuple[Seq, int]]:
        work = []
        while self.waiting and len(self.running) < self.max_running and left > 0:
            s = self.waiting[0]
            s.computed = s.blocks.reuse(self.pool, s.tokens)
            n = min(left, len(s.tokens) - s.computed)
            if not s.blocks.ensure(self.pool, s.computed, s.computed + n):
                s.blocks.release(self.pool)  # it waits; what it took goes back
                break
            self.waiting.popleft()
            if s.cached_tokens is None:
                s.cached_tokens = s.computed
                self.stats.prompt_tokens += s.prompt_len
                self.stats.cached_tokens += s.computed
            self.running.append(s)
            work.append((s, n))
            left -= n
        return work

    def _preempt(self, s: Seq) -> None:
        s.blocks.release(self.pool)
        s.computed = 0
        self.running.remove(s)
        self.waiting.appendleft(s)
        self.stats.preemptions += 1

    def commit(self, s: Seq, n: int) -> None:
        """After the forward pass: n more positions of `s` are in the cache."""
        s.computed += n
        s.blocks.advance(self.pool, s.tokens, s.computed)
