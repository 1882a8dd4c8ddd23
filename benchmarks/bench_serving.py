"""The serving engine under load: a real `gptoss serve` over loopback, driven through /v1/completions (token ids),
then the same agent trace against llama.cpp's own server, one engine at a time.

    python -m benchmarks.bench_serving [--preset 20b] [--streams 1,2,4,8] [--conversations 4] [--turns 8]
                                       [--skip-llama | --llama-server PATH --gguf PATH]

(a) Aggregate decode tokens/s with 1, 2, 4 and 8 concurrent streams (distinct prompts, greedy, fixed length).
(b) An agent trace rendered with gptoss's own harmony: N conversations x T turns sharing one system + developer
    prefix (function tool definitions of about --prefix-tokens tokens), all starting at once. Turns alternate
    between a tool-loop round (the previous prompt, the model's exact output tokens, then a 200-400-token tool
    result, as the server's own tool loop builds it) and a new user turn after a final answer (the conversation
    re-rendered with the answered turn's analysis dropped, as harmony does, so the prompt leaves the previous one
    where that turn's output began). Per turn: time to first token, prompt tokens, cached tokens (from usage),
    tokens after the divergence from the conversation's previous prompt; the total wall time; and each tool-loop
    turn's time to first token over a cold prefill of its prompt length (estimated from cold prefills measured
    first at --cold-tokens lengths, fitted as a + b*L + c*L^2 since attention grows with the prefix).
(c) The same trace against llama-server (`-np` = conversations, each conversation pinned to its slot with
    `id_slot`, prompt caching on, weight repacking off as in benchmarks/llamacpp.py, same random weights as a GGUF
    from `python -m benchmarks.llamacpp prepare`), its processed vs cached prompt tokens from `timings`; and the
    wall-time ratio gptoss / llama-server. A missing binary or GGUF exits 2 with what to do; --skip-llama runs
    gptoss alone. llama-server needs several GB: run the whole command under the machine's big-memory lock.
`--preset tiny-random` (the full-vocabulary tiny random checkpoint, seconds) proves the script works; its numbers
mean nothing. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch

from benchmarks import llama_server
from benchmarks.common import CACHE, cpu_model, emit, random_checkpoint
from benchmarks.llamacpp import gguf_path
from gptoss.engine.loader import ensure_tiny_random
from gptoss.engine.scheduler import common_prefix
from gptoss.harmony import (
    Author,
    Conversation,
    DeveloperContent,
    HarmonyEncodingName,
    Message,
    Role,
    SystemContent,
    ToolDescription,
    load_harmony_encoding,
)

ENC = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
WORDS = ["the", "river", "map", "shows", "a", "trail", "near", "old", "stone", "bridges", "where", "hikers"]


def checkpoint(preset: str) -> Path:
    if preset == "tiny-random":
        return ensure_tiny_random(CACHE / "tiny-random")[0]
    return random_checkpoint(preset)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(path: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "gptoss", "serve", "--model", str(path), "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen([*cmd, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gptoss serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("gptoss serve did not become healthy")


@dataclass
class Completion:
    token_ids: list[int]
    ttft: float
    first_at: float
    end_at: float
    prompt_tokens: int
    cached_tokens: int
    token_times: list[float] = field(default_factory=list)  # arrival of each token (gptoss only)


async def sse_lines(client: httpx.AsyncClient, path: str, body: dict[str, object]) -> AsyncIterator[dict[str, Any]]:
    async with client.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            raise SystemExit(f"{path} answered {r.status_code}: {(await r.aread()).decode(errors='replace')[:500]}")
        async for line in r.aiter_lines():
            chunk = llama_server.read_chunk(line) if line != "data: [DONE]" else None
            if chunk is not None:
                yield chunk


async def gptoss_complete(client: httpx.AsyncClient, prompt: list[int], max_tokens: int, slot: int) -> Completion:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True, "return_token_ids": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    start = time.perf_counter()
    first: float | None = None
    ids: list[int] = []
    times: list[float] = []
    usage: dict[str, Any] = {}
    async for chunk in sse_lines(client, "/v1/completions", body):
        if chunk.get("choices"):
            new = chunk["choices"][0].get("token_ids", [])
            ids += new
            times += [time.perf_counter()] * len(new)
            first = first or (time.perf_counter() if ids else None)
        usage = chunk.get("usage") or usage
    end = time.perf_counter()
    first = first or end
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return Completion(ids, first - start, first, end, usage.get("prompt_tokens", len(prompt)), cached, times)


async def llama_complete(client: httpx.AsyncClient, prompt: list[int], max_tokens: int, slot: int) -> Completion:
    start = time.perf_counter()
    first: float | None = None
    ids: list[int] = []
    timings: dict[str, Any] = {}
    async for chunk in sse_lines(client, "/completion", llama_server.completion_body(prompt, max_tokens, slot)):
        ids += chunk.get("tokens") or []
        first = first or (time.perf_counter() if ids else None)
        timings = chunk.get("timings") or timings
    end = time.perf_counter()
    first = first or end
    processed, cached = int(timings.get("prompt_n", len(prompt))), int(timings.get("cache_n", 0))
    return Completion(ids, first - start, first, end, processed + cached, cached)


Complete = Callable[[httpx.AsyncClient, list[int], int, int], Awaitable[Completion]]


async def decode_rate(url: str, streams: int, tokens: int) -> float:
    """Aggregate tokens/s while all streams decode: the tokens that arrive after the last stream's first token and
    until the first stream ends, over that window (the other streams' prompt prefills are left out)."""
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        prompts = [ENC.encode(f"stream {i}: " + " ".join(WORDS), allowed_special="all") for i in range(streams)]
        done = await asyncio.gather(*(gptoss_complete(client, p, tokens, i) for i, p in enumerate(prompts)))
    lo, hi = max(c.first_at for c in done), min(c.end_at for c in done)
    inside = sum(sum(1 for t in c.token_times if lo < t <= hi) for c in done)
    return inside / (hi - lo) if hi > lo else 0.0


async def cold_prefill(url: str, complete: Complete, tokens: int) -> float:
    """Seconds to the first token of a cold prefill of `tokens` tokens: a prompt nothing else shares (its own
    leading word and word sequence per length), one output token."""
    rng = random.Random(99 + tokens)
    prompt = ENC.encode(f"cold{tokens} " + words(rng, tokens - 1), allowed_special="all")
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        got = await complete(client, prompt, 1, 0)
    return got.ttft


@dataclass(frozen=True)
class ColdFit:
    """A cold prefill's time as a + b*L + c*L^2 seconds (the L^2 term: attention over a growing prefix), fitted
    through cold prefills measured at a few lengths; `seconds(L)` estimates a cold prefill of any prompt length."""

    points: tuple[tuple[int, float], ...]  # (prompt tokens, seconds to first token), measured

    @functools.cached_property
    def coefficients(self) -> tuple[float, float, float]:
        lengths = [float(n) for n, _ in self.points]
        if len(set(lengths)) < 2:
            raise ValueError(f"a cold-prefill fit needs at least two different lengths, got {lengths}")
        x = torch.tensor([[1.0, n, n * n] for n in lengths], dtype=torch.float64)
        y = torch.tensor([[t] for _, t in self.points], dtype=torch.float64)
        if len(set(lengths)) == 2:  # no constant term: through the origin, linear + quadratic
            x = x[:, 1:]
            b, c = torch.linalg.lstsq(x, y).solution.flatten().tolist()
            return 0.0, b, c
        a, b, c = torch.linalg.lstsq(x, y).solution.flatten().tolist()
        return a, b, c

    def seconds(self, tokens: int) -> float:
        a, b, c = self.coefficients  # fitted once, on first use
        return a + b * tokens + c * tokens * tokens


def words(rng: random.Random, n_tokens: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_tokens))  # these words are one token each, plus spaces


def prefix_messages(prefix_tokens: int) -> list[Message]:
    rng = random.Random(0)
    tools = [
        ToolDescription.new(f"tool_{i}", words(rng, 40), {"type": "object", "properties": {"q": {"type": "string"}}})
        for i in range(max(1, prefix_tokens // 60))
    ]
    system = SystemContent.new().with_conversation_start_date("2026-01-01")
    developer = DeveloperContent.new().with_instructions("Use the tools.").with_function_tools(tools)
    return [
        Message.from_role_and_content(Role.SYSTEM, system),
        Message.from_role_and_content(Role.DEVELOPER, developer),
    ]


def render(messages: list[Message]) -> list[int]:
    return ENC.render_conversation_for_completion(Conversation.from_messages(messages), Role.ASSISTANT)


@dataclass
class Turn:
    conversation: int
    turn: int
    kind: str
    ttft_s: float
    prompt_tokens: int
    cached_tokens: int
    after_divergence: int


def reply_text(ids: list[int]) -> str:
    return ENC.decode(ids).replace("<|", "< |") or "ok"  # the model's text, kept inert


async def conversation(
    complete: Complete,
    client: httpx.AsyncClient,
    c: int,
    turns: int,
    prefix: list[Message],
    out: int,
    result: list[Turn],
) -> None:
    rng = random.Random(c)
    messages = [*prefix, Message.from_role_and_content(Role.USER, f"task {c}: " + words(rng, 60))]
    prompt, previous = render(messages), list[int]()
    for t in range(turns):
        kind = "first" if t == 0 else ("tool" if t % 2 else "user")
        got = await complete(client, prompt, out, c)
        after = len(prompt) - common_prefix(prompt, previous)
        result.append(Turn(c, t, kind, got.ttft, got.prompt_tokens, got.cached_tokens, after))
        previous = prompt
        if t % 2 == 0:  # a tool-loop round next: the exact output, then the tool's result (the server's tool loop)
            tool = Message.from_author_and_content(
                Author.new(Role.TOOL, "functions.tool_0"), words(rng, rng.randrange(200, 400))
            ).with_channel("commentary")
            prompt = prompt + got.token_ids + render([tool])
            messages += [  # what a client re-sends later: the reasoning (dropped after the answer), call, result
                Message.from_role_and_content(Role.ASSISTANT, reply_text(got.token_ids)).with_channel("analysis"),
                Message.from_role_and_content(Role.ASSISTANT, '{"q": "x"}')
                .with_channel("commentary")
                .with_recipient("functions.tool_0")
                .with_content_type("<|constrain|>json"),
                tool,
            ]
        else:  # a final answer, then a new user turn: harmony drops the answered turn's analysis
            messages = [m for m in messages if m.channel != "analysis"]
            messages += [
                Message.from_role_and_content(Role.ASSISTANT, reply_text(got.token_ids)).with_channel("final"),
                Message.from_role_and_content(Role.USER, words(rng, 30)),
            ]
            prompt = render(messages)


async def agent_trace(
    url: str, complete: Complete, args: argparse.Namespace, limit: float | None
) -> tuple[list[Turn], float, bool]:
    """-> (turns in completion order, wall time, whether `limit` seconds cut it short: then the wall is a lower
    bound and only the finished turns are reported)."""
    prefix = prefix_messages(args.prefix_tokens)
    turns: list[Turn] = []
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        runs = asyncio.gather(
            *(
                conversation(complete, client, c, args.turns, prefix, args.output_tokens, turns)
                for c in range(args.conversations)
            )
        )
        try:
            await asyncio.wait_for(runs, limit)
        except TimeoutError:
            return sorted(turns, key=lambda t: (t.conversation, t.turn)), time.perf_counter() - start, True
    return sorted(turns, key=lambda t: (t.conversation, t.turn)), time.perf_counter() - start, False


@dataclass
class TraceRun:
    engine: str
    turns: list[Turn]
    wall_s: float
    cold: ColdFit
    cut_short: bool  # the time limit stopped it: wall_s is a lower bound

    def summary(self) -> dict[str, object]:
        later = [t for t in self.turns if t.turn > 0]
        within = sum(t.prompt_tokens - t.cached_tokens <= t.after_divergence + 64 for t in later)
        tool = [t.ttft_s / self.cold.seconds(t.prompt_tokens) for t in self.turns if t.kind == "tool"]
        firsts = [t for t in self.turns if t.turn == 0]
        return {
            "wall_s": round(self.wall_s, 2),
            "cut_short": self.cut_short,
            "prompt_tokens": sum(t.prompt_tokens for t in self.turns),
            "prefilled_tokens": sum(t.prompt_tokens - t.cached_tokens for t in self.turns),
            "first_turns_prefilled": [t.prompt_tokens - t.cached_tokens for t in firsts],
            "later_turns_within_one_block": within,
            "later_turns": len(later),
            "cold_prefill_s": {str(n): round(t, 3) for n, t in self.cold.points},
            "tool_ttft_over_cold": [round(r, 3) for r in tool],
            "turns": [asdict(t) for t in self.turns],
        }  # fmt: skip

    def table(self) -> list[tuple[str, str]]:
        rows = [
            (f"{self.engine} c{t.conversation} t{t.turn} {t.kind}", f"ttft {t.ttft_s:.2f}s  prompt {t.prompt_tokens}  "
             f"cached {t.cached_tokens}  prefilled {t.prompt_tokens - t.cached_tokens}  after {t.after_divergence}")
            for t in self.turns
        ]  # fmt: skip
        wall = f"{self.wall_s:.2f}s" + (" (cut short by the time limit: a lower bound)" if self.cut_short else "")
        return [*rows, (f"{self.engine} trace wall", wall)]


def run_trace(engine: str, url: str, complete: Complete, args: argparse.Namespace, limit: float | None) -> TraceRun:
    cold = ColdFit(tuple((n, asyncio.run(cold_prefill(url, complete, n))) for n in args.cold_tokens))
    turns, wall, cut = asyncio.run(agent_trace(url, complete, args, limit))
    return TraceRun(engine, turns, wall, cold, cut)


def gptoss_half(args: argparse.Namespace) -> tuple[dict[int, float], TraceRun, str]:
    proc, url = start_server(checkpoint(args.preset), args.serve_args.split())
    try:
        rates = {n: asyncio.run(decode_rate(url, n, args.decode_tokens)) for n in map(int, args.streams.split(","))}
        trace = run_trace("gptoss", url, gptoss_complete, args, None)
        metrics = httpx.get(url + "/metrics").text
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return rates, trace, metrics


def llama_ready(args: argparse.Namespace, wait: float) -> None:
    """Exits 2 saying what is missing unless llama-server and the GGUF are there (within `wait` seconds)."""
    deadline = time.monotonic() + wait
    while (why := llama_server.missing(args.llama_server, args.gguf)) is not None and time.monotonic() < deadline:
        time.sleep(10)
    if why is not None:
        print(why, file=sys.stderr)
        raise SystemExit(2)


def llama_half(args: argparse.Namespace) -> TraceRun:
    port = free_port()
    extra = args.llama_args.split()
    proc = llama_server.start(args.llama_server, args.gguf, port, args.conversations, args.llama_ctx, extra)
    try:
        return run_trace("llama-server", f"http://127.0.0.1:{port}", llama_complete, args, args.llama_limit)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="20b", help="20b (a random checkpoint of its shapes) or tiny-random")
    p.add_argument("--streams", default="1,2,4,8")
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--conversations", type=int, default=4)
    p.add_argument("--turns", type=int, default=8)
    p.add_argument("--prefix-tokens", type=int, default=1500)
    p.add_argument("--output-tokens", type=int, default=32, help="tokens generated per trace turn")
    p.add_argument(
        "--cold-tokens",
        type=lambda v: [int(n) for n in v.split(",")],
        default=[512, 3072],
        help="prompt lengths of the cold-prefill measurements (comma list, at least two)",
    )
    p.add_argument("--serve-args", default="", help="extra `gptoss serve` options, e.g. '--kv-cache-gb 4'")
    p.add_argument("--skip-llama", action="store_true", help="run gptoss alone (no llama-server half)")
    p.add_argument("--llama-server", type=Path, default=llama_server.default_server())
    p.add_argument("--gguf", type=Path, default=None, help="default: `benchmarks.llamacpp prepare`'s for --preset")
    p.add_argument("--llama-ctx", type=int, default=8192, help="llama-server context per slot")
    p.add_argument("--llama-args", default="--no-repack", help="extra llama-server options")
    p.add_argument(
        "--llama-wait",
        type=float,
        default=0,
        help="seconds to wait for a llama-server still being built (after gptoss)",
    )
    p.add_argument(
        "--llama-limit",
        type=float,
        default=None,
        help="seconds after which llama-server's trace stops (wall: a lower bound)",
    )
    args = p.parse_args()
    if len(set(args.cold_tokens)) < 2:
        p.error(f"--cold-tokens needs at least two different lengths (the fit is quadratic), got {args.cold_tokens}")
    if not args.skip_llama:
        args.gguf = args.gguf or gguf_path(args.preset)
        if not args.llama_wait or not args.gguf.is_file():  # fail before loading anything; a binary may be building
            llama_ready(args, 0)
    load = [os.getloadavg()[0]]
    rates, ours, metrics = gptoss_half(args)
    load.append(os.getloadavg()[0])
    if not args.skip_llama:
        llama_ready(args, args.llama_wait)
    theirs = None if args.skip_llama else llama_half(args)
    load.append(os.getloadavg()[0])
    preempted = [ln.split()[-1] for ln in metrics.splitlines() if ln.startswith("gptoss_preemptions_total")]
    result: dict[str, object] = {
        "benchmark": "serving",
        "preset": args.preset,
        "cpu": cpu_model(),
        "threads": os.cpu_count(),
        "load_average_at_start_between_end": load,
        "decode_tokens_per_s": {str(n): round(r, 2) for n, r in rates.items()},
        "preemptions": float(preempted[0]) if preempted else None,
        "gptoss": ours.summary(),
        "llama_server": theirs.summary() if theirs is not None else None,
        "wall_ratio_gptoss_over_llama": round(ours.wall_s / theirs.wall_s, 3) if theirs is not None else None,
        "wall_ratio_is_an_upper_bound": theirs.cut_short if theirs is not None else None,
    }
    table = [(f"decode x{n}", f"{r:.2f} tok/s") for n, r in rates.items()] + ours.table()
    if theirs is not None:
        table += [*theirs.table(), ("wall gptoss / llama-server", f"{ours.wall_s / theirs.wall_s:.3f}")]
    emit(table, result)


if __name__ == "__main__":
    main()
