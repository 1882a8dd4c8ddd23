"""The serving engine under load: a real `gptoss serve` over loopback, driven through /v1/completions (token ids).

    python -m benchmarks.bench_serving [--preset 20b] [--streams 1,2,4,8] [--conversations 4] [--turns 8]

(a) Aggregate decode tokens/s with 1, 2, 4 and 8 concurrent streams (distinct prompts, greedy, fixed length).
(b) An agent trace rendered with gptoss's own harmony: N conversations x T turns sharing one system + developer
    prefix (function tool definitions of about --prefix-tokens tokens). Turns alternate between a tool-loop round
    (the previous prompt, the model's output as an analysis message and a tool call, then a 200-400-token tool
    result) and a new user turn after a final answer (the answered turn's analysis dropped, as harmony does, so the
    prompt leaves the previous one where that ended). Per turn: time to first token, prompt tokens, cached tokens
    (from usage), tokens after the divergence from the conversation's previous prompt; and the total wall time.
llama-server's half of the issue's comparison is not implemented here.
`--preset tiny-random` (the full-vocabulary tiny random checkpoint, seconds) proves the script works; its numbers
mean nothing. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from benchmarks.common import CACHE, cpu_model, emit, random_checkpoint
from gptoss.engine.loader import ensure_tiny_random
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
    text: str
    ttft: float
    wall: float
    first_at: float
    end_at: float
    output_tokens: int
    prompt_tokens: int
    cached_tokens: int


async def complete(client: httpx.AsyncClient, prompt: list[int], max_tokens: int) -> Completion:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    start = time.perf_counter()
    first, text, usage = None, [], {}
    async with client.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices"):
                first = first or time.perf_counter()
                text.append(chunk["choices"][0]["text"])
            usage = chunk.get("usage") or usage
    end = time.perf_counter()
    first = first or end
    details = usage.get("prompt_tokens_details") or {}
    return Completion(
        "".join(text), first - start, end - start, first, end, usage.get("completion_tokens", 0),
        usage.get("prompt_tokens", len(prompt)), details.get("cached_tokens", 0),
    )  # fmt: skip


async def decode_rate(url: str, streams: int, tokens: int) -> float:
    """Aggregate tokens/s while all streams decode: tokens after each stream's first, over the common span."""
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        prompts = [ENC.encode(f"stream {i}: " + " ".join(WORDS), allowed_special="all") for i in range(streams)]
        done = await asyncio.gather(*(complete(client, p, tokens) for p in prompts))
    span = max(c.end_at for c in done) - min(c.first_at for c in done)
    return sum(c.output_tokens - 1 for c in done) / span if span > 0 else 0.0


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


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class Turn:
    conversation: int
    turn: int
    kind: str
    ttft_s: float
    prompt_tokens: int
    cached_tokens: int
    after_divergence: int


async def conversation(client: httpx.AsyncClient, c: int, turns: int, prefix: list[Message], out: int) -> list[Turn]:
    rng = random.Random(c)
    messages = [*prefix, Message.from_role_and_content(Role.USER, f"task {c}: " + words(rng, 60))]
    previous: list[int] = []
    result = []
    for t in range(turns):
        prompt = render(messages)
        kind = "first" if t == 0 else ("tool" if t % 2 else "user")
        got = await complete(client, prompt, out)
        after = len(prompt) - common_prefix(prompt, previous)
        result.append(Turn(c, t, kind, got.ttft, got.prompt_tokens, got.cached_tokens, after))
        previous = prompt
        reply = got.text.replace("<|", "< |") or "ok"  # the model's text, kept inert
        if t % 2 == 0:  # the next turn is a tool-loop round: reasoning and the call stay, the result follows
            messages += [
                Message.from_role_and_content(Role.ASSISTANT, reply).with_channel("analysis"),
                Message.from_role_and_content(Role.ASSISTANT, '{"q": "x"}')
                .with_channel("commentary")
                .with_recipient("functions.tool_0")
                .with_content_type("<|constrain|>json"),
                Message.from_author_and_content(
                    Author.new(Role.TOOL, "functions.tool_0"), words(rng, rng.randrange(200, 400))
                ).with_channel("commentary"),
            ]
        else:  # a final answer, then a new user turn: harmony drops the answered turn's analysis
            messages = [m for m in messages if m.channel != "analysis"]
            messages += [
                Message.from_role_and_content(Role.ASSISTANT, reply).with_channel("final"),
                Message.from_role_and_content(Role.USER, words(rng, 30)),
            ]
    return result


async def agent_trace(url: str, args: argparse.Namespace) -> tuple[list[Turn], float]:
    prefix = prefix_messages(args.prefix_tokens)
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        runs = await asyncio.gather(
            *(conversation(client, c, args.turns, prefix, args.output_tokens) for c in range(args.conversations))
        )
    return [t for run in runs for t in run], time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="20b", help="20b (a random checkpoint of its shapes) or tiny-random")
    p.add_argument("--streams", default="1,2,4,8")
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--conversations", type=int, default=4)
    p.add_argument("--turns", type=int, default=8)
    p.add_argument("--prefix-tokens", type=int, default=1500)
    p.add_argument("--output-tokens", type=int, default=32, help="tokens generated per trace turn")
    p.add_argument("--serve-args", default="", help="extra `gptoss serve` options, e.g. '--kv-cache-gb 4'")
    args = p.parse_args()
    proc, url = start_server(checkpoint(args.preset), args.serve_args.split())
    try:
        rates = {n: asyncio.run(decode_rate(url, n, args.decode_tokens)) for n in map(int, args.streams.split(","))}
        turns, wall = asyncio.run(agent_trace(url, args))
        metrics = httpx.get(url + "/metrics").text
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    later = [t for t in turns if t.turn > 0]
    within = sum(t.prompt_tokens - t.cached_tokens <= t.after_divergence + 64 for t in later)
    preempted = [ln.split()[-1] for ln in metrics.splitlines() if ln.startswith("gptoss_preemptions_total")]
    result = {
        "benchmark": "serving",
        "preset": args.preset,
        "cpu": cpu_model(),
        "threads": os.cpu_count(),
        "decode_tokens_per_s": {str(n): round(r, 2) for n, r in rates.items()},
        "trace_wall_s": round(wall, 2),
        "trace_prompt_tokens": sum(t.prompt_tokens for t in turns),
        "trace_prefilled_tokens": sum(t.prompt_tokens - t.cached_tokens for t in turns),
        "later_turns_within_one_block": within,
        "later_turns": len(later),
        "preemptions": float(preempted[0]) if preempted else None,
        "turns": [asdict(t) for t in turns],
    }  # fmt: skip
    table = [(f"decode x{n}", f"{r:.2f} tok/s") for n, r in rates.items()]
    table += [
        (f"c{t.conversation} t{t.turn} {t.kind}", f"ttft {t.ttft_s:.2f}s  prompt {t.prompt_tokens}  cached "
         f"{t.cached_tokens}  prefilled {t.prompt_tokens - t.cached_tokens}  after divergence {t.after_divergence}")
        for t in turns
    ]  # fmt: skip
    table.append(("trace wall", f"{wall:.2f}s"))
    emit(table, result)


if __name__ == "__main__":
    main()
