"""Continuous batching on the tiny model (fp32): every request gets exactly the tokens it gets alone, through
preemption, cancellation and prefix-cache hits; cache hits give cold-prefill logits; decoders are never stalled."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Sequence

import pytest
import torch

import gptoss
from gptoss.engine import BatchConfig, BatchedModelSource, Engine, Finish, Generation
from gptoss.errors import InputError
from gptoss.random_checkpoint import write_random_checkpoint
from gptoss.sampling import SamplingParams

BS = 4  # block size; the tiny preset's band is 8 positions, so a band spans two or three blocks
BLOCK_BYTES = 2 * 2 * BS * 2 * 16 * 4  # K and V, 2 layers per group, 2 KV heads of 16 dims, fp32


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> gptoss.Model:
    path = write_random_checkpoint(tmp_path_factory.mktemp("batched") / "tiny", gptoss.PRESETS["tiny"], "hf", seed=1)
    return gptoss.load(path, dtype=torch.float32, context_length=256)


def source(model: gptoss.Model, blocks: int | None = 512, **kw: object) -> BatchedModelSource:
    budget = None if blocks is None else blocks * BLOCK_BYTES
    return BatchedModelSource(model, BatchConfig(block_size=BS, kv_cache_bytes=budget, **kw))  # type: ignore[arg-type]


def greedy(n: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=n)


def drain(src: BatchedModelSource) -> dict[object, list[int]]:
    out: dict[object, list[int]] = {}
    while src.counts != (0, 0):
        for o in src.step():
            assert o.event is not None
            out.setdefault(o.key, []).append(o.event.token)
            if o.done:
                src.remove(o.key)
    return out


def first_logits(src: BatchedModelSource, key: object, prompt: Sequence[int]) -> torch.Tensor:
    src.add(key, prompt, greedy(1))
    while True:
        for o in src.step():
            if o.key == key:
                src.remove(key)
                assert o.logits is not None
                return o.logits


def test_block_bytes_matches_the_storage(model: gptoss.Model) -> None:
    src = source(model, blocks=10)
    assert src.pool.num_blocks == 10
    assert src.storage.k.element_size() * src.storage.k[:, 0].numel() * 2 == BLOCK_BYTES


def requests(seed: int, n: int, shared: int = 0) -> list[tuple[list[int], SamplingParams]]:
    rng = random.Random(seed)
    common = [rng.randrange(1024) for _ in range(shared)]
    out = []
    for i in range(n):
        prompt = common[: rng.randrange(shared + 1)] + [rng.randrange(1024) for _ in range(rng.randrange(1, 40))]
        temp = 0.0 if i % 3 else 0.9  # some sampled (seeded) requests too: their generators are per sequence
        out.append((prompt, SamplingParams(temperature=temp, seed=i, max_tokens=rng.randrange(1, 24))))
    return out


async def serve_all(
    engine: Engine, reqs: list[tuple[list[int], SamplingParams]], seed: int, cancel: int | None = None
) -> list[tuple[list[int], Finish | None]]:
    rng = random.Random(seed)

    async def one(i: int, prompt: list[int], p: SamplingParams) -> tuple[list[int], Finish | None]:
        await asyncio.sleep(rng.random() * 0.05)  # random arrival times
        gen: Generation = engine.submit(prompt, p)
        tokens = []
        async for event in gen:
            tokens.append(event.token)
            if i == cancel and len(tokens) == 2:
                gen.cancel()
        return tokens, gen.finish

    return list(await asyncio.gather(*(one(i, prompt, p) for i, (prompt, p) in enumerate(reqs))))


@pytest.mark.parametrize("blocks", [512, 24])  # plenty; a pool small enough to force preemptions
def test_concurrent_requests_get_the_tokens_they_get_alone(model: gptoss.Model, blocks: int) -> None:
    src = source(model, blocks, max_running=4, max_step_tokens=16)
    reqs = [r for r in requests(5, 10, shared=24) if len(r[0]) + (r[1].max_tokens or 0) <= src.tokens_that_fit()]
    # The cancelled one gets all the room there is, so it cannot finish before its consumer cancels it.
    prompt, p = reqs[3]
    reqs[3] = prompt, dataclasses.replace(p, max_tokens=src.tokens_that_fit() - len(prompt))
    engine = Engine(src, max_queue=32)
    try:
        results = asyncio.run(serve_all(engine, reqs, seed=blocks, cancel=3))
    finally:
        engine.close()
    for i, ((prompt, p), (tokens, finish)) in enumerate(zip(reqs, results, strict=True)):
        alone = list(model.generate_with(prompt, p))
        if i == 3:
            assert finish == Finish.CANCELLED and tokens == alone[: len(tokens)] and len(tokens) >= 2
        else:
            assert tokens == alone, f"request {i}"
    assert src.pool.used == 0  # everything given back (cached blocks are not in use)
    if blocks == 24:
        assert src.stats.preemptions > 0
    else:
        assert src.stats.cached_tokens > 0  # the shared prefixes hit


def test_garbage_in_never_written_blocks_does_not_leak_into_attention(model: gptoss.Model) -> None:
    src = source(model, max_running=2)
    src.storage.k.fill_(float("nan"))  # what an uninitialised pool may hold
    src.storage.v.fill_(float("nan"))
    src.add("a", list(range(1, 11)), greedy(8))  # 10 + 8 tokens: partly filled last blocks
    src.add("b", list(range(20, 25)), greedy(8))
    out = drain(src)
    assert out["a"] == list(model.generate_with(list(range(1, 11)), greedy(8)))
    assert out["b"] == list(model.generate_with(list(range(20, 25)), greedy(8)))


def test_cold_and_warm_prompts_give_the_same_tokens(model: gptoss.Model) -> None:
    src = source(model, max_running=4, max_step_tokens=32)
    prompt = list(range(100, 150))
    src.add("cold", prompt, greedy(10))
    cold = drain(src)["cold"]
    src.add("warm", prompt, greedy(10))
    assert drain(src)["warm"] == cold == list(model.generate_with(prompt, greedy(10)))
    assert src.stats.cached_tokens == 48


@pytest.mark.parametrize(
    "prefix", [3, 4, 8, 10, 12, 21, 24]
)  # before, at and past the 8-token band; on and off boundaries
def test_a_prefix_hit_gives_the_logits_of_a_cold_prefill(model: gptoss.Model, prefix: int) -> None:
    rng = random.Random(prefix)
    first = [rng.randrange(1024) for _ in range(prefix)]
    second = [*first, *(rng.randrange(1024) for _ in range(5))]  # diverges where the first prompt ended
    src = source(model)
    first_logits(src, "first", first)
    warm = first_logits(src, "second", second)
    assert src.stats.cached_tokens == prefix // BS * BS  # reused up to the last block boundary of the first prompt
    cold = model.logits(second)[-1]
    assert torch.allclose(warm, cold, atol=1e-5, rtol=0)
    assert torch.allclose(first_logits(source(model), "cold", second), cold, atol=1e-5, rtol=0)


def test_a_third_request_on_a_shared_prefix_reuses_it(model: gptoss.Model) -> None:
    system = list(range(300, 330))  # 30 tokens: a shared "system prompt"
    src = source(model)
    first_logits(src, "a", [*system, 1, 2, 3])
    first_logits(src, "b", [*system, 4, 5, 6])
    assert src.stats.cached_tokens == 0  # a's sliding band at the divergence was not kept
    warm = first_logits(src, "c", [*system, 7, 8, 9])
    assert src.stats.cached_tokens == 28  # b kept its band where it left a: c resumes there
    assert torch.allclose(warm, model.logits([*system, 7, 8, 9])[-1], atol=1e-5, rtol=0)


def test_requests_arriving_together_prefill_their_shared_prefix_once(model: gptoss.Model) -> None:
    system = list(range(300, 330))  # 30 tokens: 7 complete blocks
    prompts = {k: [*system, *range(10 * i, 10 * i + 6)] for i, k in enumerate("abcd")}
    src = source(model, max_step_tokens=256)  # room for all four prompts in one step
    for k, prompt in prompts.items():
        src.add(k, prompt, greedy(5))
    out = drain(src)
    for k, prompt in prompts.items():
        assert out[k] == list(model.generate_with(prompt, greedy(5)))
    assert src.stats.cached_tokens == 3 * 28  # b, c and d resumed at a's last block boundary in the prefix
    assert src.stats.step_tokens == 36 + 3 * 8 + 4 * 4  # prompts (a whole, the others past 28), then decode


def test_the_prefix_cache_can_be_turned_off(model: gptoss.Model) -> None:
    src = source(model, prefix_cache=False)
    first_logits(src, "a", list(range(40)))
    first_logits(src, "b", list(range(40)))
    assert src.stats.cached_tokens == 0


def test_a_long_prompt_does_not_stall_decoders(model: gptoss.Model) -> None:
    src = source(model, max_running=4, max_step_tokens=8)
    src.add("short", [1, 2, 3], greedy(30))
    src.step()  # the short prompt's prefill and first token
    src.add("long", list(range(200, 400)), greedy(2))
    steps = 0
    while "short" in src._seqs:
        outputs = src.step()
        steps += 1
        assert any(o.key == "short" for o in outputs), f"step {steps}: the decoder got no token"
        assert src.stats.step_tokens <= 8 * src.stats.steps
        for o in outputs:
            if o.done:
                src.remove(o.key)
    assert "long" in src._seqs  # it was still prefilling: 200 tokens at <= 7 per step


def test_a_request_that_cannot_fit_alone_is_refused_with_the_number_that_fits(model: gptoss.Model) -> None:
    src = source(model, blocks=12, max_step_tokens=4)
    fit = src.tokens_that_fit()
    assert 0 < fit < 48
    with pytest.raises(InputError, match=f"holds {fit} tokens .* needs {fit + 1} "):
        src.check(list(range(fit - 4)), greedy(5))
    assert src.check(list(range(fit - 5)), SamplingParams(max_tokens=None)) == 5  # open-ended: capped at what fits


def test_the_engine_reports_waiting_and_running(model: gptoss.Model) -> None:
    src = source(model, max_running=1)
    engine = Engine(src, max_queue=8)

    async def main() -> None:
        gens = [engine.submit([1, 2, 3], greedy(200)) for _ in range(3)]  # long: none ends before the check
        await asyncio.sleep(0)
        stats = engine.stats()
        assert stats.waiting + stats.running == 3 and stats.running <= 1
        for g in gens:
            assert [e.token async for e in g]
        assert gens[2].stats.cached_tokens == 0  # 3 tokens: no complete block before the last one

    try:
        asyncio.run(main())
    finally:
        engine.close()
    assert engine.stats() == type(engine.stats())(0, 0)


def test_a_constraint_is_applied_per_sequence(model: gptoss.Model) -> None:
    class Even:
        def __init__(self) -> None:
            self.seen: list[int] = []

        def mask(self) -> torch.Tensor:
            return torch.arange(1024) % 2 == 0

        def advance(self, token: int) -> None:
            self.seen.append(token)

    src = source(model, max_running=2)
    even = Even()
    src.add("even", [5, 6, 7], greedy(6), constraint=even)
    src.add("free", [5, 6, 7], greedy(6))
    out = drain(src)
    alone = Even()
    assert out["even"] == even.seen == list(model.generate_with([5, 6, 7], greedy(6), alone)) == alone.seen
    assert all(t % 2 == 0 for t in out["even"])
    assert out["free"] == list(model.generate_with([5, 6, 7], greedy(6)))


def test_a_failing_constraint_fails_only_its_own_request(model: gptoss.Model) -> None:
    class Nothing:
        def mask(self) -> torch.Tensor:
            return torch.zeros(1024, dtype=torch.bool)

        def advance(self, token: int) -> None:
            raise AssertionError("never reached")

    engine = Engine(source(model, max_running=2))

    async def main() -> tuple[Generation, Generation]:
        bad = engine.submit([1, 2, 3], greedy(4), constraint=Nothing())
        good = engine.submit([1, 2, 3], greedy(4))
        assert [e async for e in bad] == []
        assert [e.token async for e in good] == list(model.generate_with([1, 2, 3], greedy(4)))
        return bad, good

    try:
        bad, good = asyncio.run(main())
    finally:
        engine.close()
    assert bad.finish == Finish.ERROR and "token mask allows no token" in str(bad.error)
    assert good.finish == Finish.LENGTH


def test_bad_batch_configs_are_refused(model: gptoss.Model) -> None:
    with pytest.raises(ValueError, match="max_running must be >= 1, got 0"):
        BatchConfig(max_running=0)
    with pytest.raises(ValueError, match="max_step_tokens must be >= 1, got 0"):
        BatchConfig(max_step_tokens=0)
    with pytest.raises(ValueError, match="block_size must be in 1..64, got 65"):
        BatchConfig(block_size=65)
    with pytest.raises(ValueError, match="the KV cache budget must be positive"):
        BatchConfig(kv_cache_bytes=0)
    with pytest.raises(ValueError, match="prefill_patience must be >= 0, got -1"):
        BatchConfig(prefill_patience=-1)
    none_fits = f"a KV cache budget of 100 bytes holds no block \\({BLOCK_BYTES} bytes each\\)"
    with pytest.raises(ValueError, match=none_fits):
        BatchedModelSource(model, BatchConfig(block_size=BS, kv_cache_bytes=100))
