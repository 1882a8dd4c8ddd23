"""bench_serving's llama-server half without a llama-server: the refusal when it is missing, and the parsing of its
/completion stream (tokens, processed vs cached prompt tokens) from a canned answer."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from benchmarks.bench_serving import ColdFit, Completion, llama_complete

from benchmarks import llama_server


def test_a_missing_binary_or_gguf_says_what_to_do(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    assert "llama-server not found at /nowhere" in (llama_server.missing(Path("/nowhere"), gguf) or "")
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert f"no GGUF at {gguf}" in (llama_server.missing(binary, gguf) or "")
    gguf.write_bytes(b"GGUF")
    assert llama_server.missing(binary, gguf) is None


def test_the_benchmark_exits_2_before_loading_anything_when_llama_server_is_missing() -> None:
    cmd = [sys.executable, "-m", "benchmarks.bench_serving", "--preset", "tiny-random", "--llama-server", "/nowhere"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "llama-server not found at /nowhere" in r.stderr and "--skip-llama" in r.stderr


def test_a_completion_stream_gives_tokens_and_processed_vs_cached() -> None:
    seen: list[dict[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        chunks = [{"content": "a", "tokens": [5], "stop": False}, {"content": "b", "tokens": [6], "stop": False}]
        chunks.append({"content": "", "tokens": [], "stop": True, "timings": {"prompt_n": 70, "cache_n": 128}})
        return httpx.Response(200, text="".join(f"data: {json.dumps(c)}\n\n" for c in chunks))

    async def main() -> Completion:
        async with httpx.AsyncClient(base_url="http://x", transport=httpx.MockTransport(answer)) as client:
            return await llama_complete(client, list(range(198)), 2, 3)

    got = asyncio.run(main())
    assert (got.token_ids, got.prompt_tokens, got.cached_tokens) == ([5, 6], 198, 128)
    assert seen[0]["id_slot"] == 3 and seen[0]["cache_prompt"] is True and seen[0]["prompt"] == list(range(198))


def test_the_cold_prefill_fit_recovers_a_quadratic_cost() -> None:
    cost = lambda n: 2e-3 * n + 1e-6 * n * n  # noqa: E731
    two = ColdFit(((512, cost(512)), (3072, cost(3072))))
    assert two.seconds(2000) == pytest.approx(cost(2000), rel=1e-9)
    three = ColdFit(((256, 0.5 + cost(256)), (1024, 0.5 + cost(1024)), (3072, 0.5 + cost(3072))))
    assert three.seconds(2000) == pytest.approx(0.5 + cost(2000), rel=1e-9)
    assert three.coefficients[0] == pytest.approx(0.5, rel=1e-6)


def test_the_cold_prefill_fit_needs_two_lengths() -> None:
    with pytest.raises(ValueError, match="at least two different lengths, got \\[512.0, 512.0\\]"):
        ColdFit(((512, 1.0), (512, 1.1))).seconds(1000)
    cmd = [sys.executable, "-m", "benchmarks.bench_serving", "--skip-llama", "--cold-tokens", "512"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--cold-tokens needs at least two different lengths" in r.stderr
