"""Continuous batching, in plain Python: which sequences run, and how many tokens each feeds in the next step.

Every step, each running sequence that is decoding feeds its one new token; what is left of the step's token
budget goes to prompt chunks, fewest uncached tokens first: a tool-loop turn (a long prompt that is mostly cached)
gets its first token in a step or two instead of queueing behind another request's long prefill. A prefilling
sequence passed over `patience` steps in a row goes first, so long prompts still progress. Waiting sequences join
(first in, first out) while there is room: a free running slot, budget, and KV blocks (after the prefix cache has
been searched for their prompt). One whose next prompt blocks are being prefilled by a running sequence right now
waits for them (they reach the prefix cache as they fill), so requests arriving together on one system prompt
prefill it once.

When a running sequence cannot get a block, the newest running sequence is preempted: its blocks go back (into
the prefix cache, so resuming it is often cheap) and it waits at the head of the queue with its tokens so far;
when re-admitted it recomputes them and goes on exactly where it was. The oldest sequence therefore makes progress
at least once every `patience + 1` steps, as long as it fits the pool alone (which `check` guarantees before a
request is accepted).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from gptoss.engine.blocks import BlockPool, Layout, SeqBlocks, prompt_keys


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
    passed_over: int = 0  # steps in a row it had prompt tokens to feed and got none
    _keys: list[bytes] = field(default_factory=list)
    _keyed: int = -1  # len(tokens) when _keys was computed

    def keys(self, block_size: int) -> list[bytes]:
        """The chain keys of the complete blocks before its last token (what a prefix-cache hit can cover)."""
        if self._keyed != len(self.tokens):
            self._keys, self._keyed = prompt_keys(self.tokens, block_size), len(self.tokens)
        return self._keys

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
    patience: int = 4  # steps a prefilling sequence may be passed over before it goes first
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
        joining = self._joining()
        wants = self._budget(joining)
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
        if not preempted:  # what was just preempted must not come straight back
            work += self._admit(joining, wants)
        fed = {id(s) for s, _ in work}
        for s in [*self.running, *(s for s, _ in joining if s in self.waiting)]:
            s.passed_over = 0 if s.decoding or id(s) in fed else s.passed_over + 1
        self.stats.observe(work)
        return work

    def _joining(self) -> list[tuple[Seq, int]]:
        """Waiting sequences that may join this step, in arrival order, with the tokens each still has to prefill
        after its prefix-cache hit. One whose next blocks a sequence ahead of it is prefilling right now (or joins
        to prefill) waits for them instead of computing them twice: requests arriving together on one system prompt
        prefill it once."""
        bs = self.layout.block_size
        ahead = [(a, a.computed) for a in self.running]
        out: list[tuple[Seq, int]] = []
        for s in self.waiting:
            if len(self.running) + len(out) >= self.max_running:
                break
            reusable, _ = s.blocks.match(self.pool, s.keys(bs)) if self.pool.prefix_cache else (0, 0)
            if not self._waits_for_prefill(s, reusable, ahead):
                out.append((s, len(s.tokens) - reusable))
                ahead.append((s, reusable))
        return out

    def _budget(self, joining: list[tuple[Seq, int]]) -> dict[int, int]:
        """Tokens per sequence: one per decoder, then prompt chunks, fewest uncached tokens first (a tool-loop turn
        is not stuck behind a long prompt), except that one passed over `patience` steps in a row goes first (so
        long prompts still progress)."""
        wants = {id(s): 1 if s.decoding else 0 for s in self.running}
        left = max(0, self.max_step_tokens - sum(wants.values()))
        todo = [(s, len(s.tokens) - s.computed) for s in self.running if not s.decoding] + joining
        order = {id(s): i for i, (s, _) in enumerate(todo)}

        def rank(item: tuple[Seq, int]) -> tuple[bool, int, int]:
            s, rest = item
            starved = s.passed_over >= self.patience
            return (not starved, 0 if starved else rest, order[id(s)])

        for s, rest in sorted(todo, key=rank):
            wants[id(s)] = n = min(left, rest)
            left -= n
        return wants

    def _admit(self, joining: list[tuple[Seq, int]], wants: dict[int, int]) -> list[tuple[Seq, int]]:
        work = []
        for s, _ in joining:
            if wants[id(s)] == 0:
                continue
            s.computed = s.blocks.reuse(self.pool, s.tokens)
            n = min(wants[id(s)], len(s.tokens) - s.computed)
            if not s.blocks.ensure(self.pool, s.computed, s.computed + n):
                s.blocks.release(self.pool)  # it waits; what it took goes back
                break
            self.waiting.remove(s)
            if s.cached_tokens is None:
                s.cached_tokens = s.computed
                self.stats.prompt_tokens += s.prompt_len
                self.stats.cached_tokens += s.computed
            self.running.append(s)
            work.append((s, n))
        return work

    def _waits_for_prefill(self, s: Seq, reusable: int, ahead: list[tuple[Seq, int]]) -> bool:
        """True when a sequence ahead of `s` (with its computed positions) will compute blocks of `s`'s prompt past
        what the cache holds now. That sequence then keeps the sliding band where the two prompts part, so `s`
        resumes exactly there."""
        if not self.pool.prefix_cache:
            return False
        bs = self.layout.block_size
        keys = s.keys(bs)
        best, end = None, reusable
        for a, computed in ahead:
            shared = common_prefix(keys, a.keys(bs)) * bs
            if shared > max(computed, end):
                best, end = a, shared
        if best is None:
            return False
        best.blocks.checkpoint(end)
        return True

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


def common_prefix(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """How many leading items two sequences share (of two block-key chains: how many blocks of prefix)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
