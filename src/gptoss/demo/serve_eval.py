"""The demo model measured through a running `gptoss serve` (started with `--python`): held-out prompts sent as
Responses requests, the way a client sends them, with the server's grammar and the real sandboxed python tool.

- arithmetic: `code_interpreter` offered; the server runs the model's `print(...)` in the sandbox and feeds the
  output back; correct = the call's code is the expression and the answer holds the value;
- function calling: the declared function tools; correct = the right function with the right arguments, then
  (the result sent back as `function_call_output` on `previous_response_id`) the answer that uses it;
- extraction: instructions + `text.format` json_schema; schema-valid and field-exact are counted apart;
- chat: greetings and "I don't know"; correct = the expected reply.
Every response must be `completed` (its turns closed with `<|call|>` / `<|return|>`); the analysis length (tokens
of the reasoning items) is collected per effort. Decoding is greedy (`temperature` 0).

    python -m gptoss.demo.serve_eval [URL] [--model M] [--per-family N] [--seed S] [--workers W]

Without URL it starts `gptoss serve --python` itself (the built-in demo model, or --model M) on a free port and
stops it after. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import httpx
import jsonschema

from gptoss.demo.data import Sample, generate
from gptoss.demo.evaluate import EVAL_SEED
from gptoss.demo.tasks import FAMILIES, Task
from gptoss.harmony import load_harmony_encoding
from gptoss.server.conversation import BuiltinCall, FunctionCall, FunctionOutput, Text

TIMEOUT = 300.0


@dataclass(frozen=True)
class Outcome:
    family: str
    effort: str
    completed: bool  # every response of the exchange had status "completed"
    correct: bool
    analysis_tokens: int
    schema_valid: bool | None = None  # extraction only
    got: str = ""  # what the model did: its call (name and arguments) and its answer
    asked: str = ""  # the user's words


class Server(Protocol):
    def respond(self, body: dict[str, Any]) -> dict[str, Any]: ...  # POST /v1/responses -> the response object

    def tokens(self, text: str) -> int: ...


class Client:
    """The real server over HTTP."""

    def __init__(self, url: str, model: str | None = None) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/") + "/v1", timeout=TIMEOUT)
        self.model = model or self.http.get("/models").json()["data"][0]["id"]
        self.encoding = load_harmony_encoding("HarmonyGptOss")

    def respond(self, body: dict[str, Any]) -> dict[str, Any]:
        body = {"model": self.model, "max_output_tokens": 512, "temperature": 0.0, **body}  # greedy, as evaluate.py
        r = self.http.post("/responses", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"POST /v1/responses answered {r.status_code}: {r.text}")
        out: dict[str, Any] = r.json()
        return out

    def tokens(self, text: str) -> int:
        return len(self.encoding.encode(text, allowed_special=set()))


def request(s: Sample) -> dict[str, Any]:
    """The Responses request a client sends for the sample's prompt."""
    t = s.task
    said: str | list[dict[str, Any]] = user_text(s)
    if s.earlier is not None:  # a follow-up: the client sends the earlier exchange back first
        said = [*history(s.earlier), {"role": "user", "content": said}]
    body: dict[str, Any] = {"input": said, "reasoning": {"effort": s.effort.value.lower()}}
    tools: list[dict[str, Any]] = [
        {"type": "function", "name": f.name, "description": f.description, "parameters": f.parameters} for f in t.tools
    ]
    if t.python:
        tools.append({"type": "code_interpreter", "container": {"type": "auto"}})
    if tools:
        body["tools"] = tools
    if t.instructions is not None:
        body["instructions"] = t.instructions
    if t.response_format is not None:
        fmt = t.response_format
        body["text"] = {"format": {"type": "json_schema", "name": fmt.name, "schema": fmt.schema, "strict": True}}
    return body


def history(earlier: Task) -> list[dict[str, Any]]:
    """An earlier exchange as Responses input items: the user's words, function calls and their outputs, the
    answer (a python call is left out: the server drops a completed turn's python calls from the prompt anyway)."""
    out: list[dict[str, Any]] = []
    for i in (*earlier.prompt, *earlier.turn):
        if isinstance(i, Text):
            out.append({"role": i.role, "content": i.text})
        elif isinstance(i, FunctionCall):
            out.append({"type": "function_call", "call_id": i.call_id, "name": i.name, "arguments": i.arguments})
        elif isinstance(i, FunctionOutput):
            out.append({"type": "function_call_output", "call_id": i.call_id, "output": i.output})
    return out


def user_text(s: Sample) -> str:
    return "".join(i.text for i in s.task.prompt if isinstance(i, Text))


def items(r: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [o for o in r.get("output", []) if o.get("type") == kind]


def answer(r: dict[str, Any]) -> str:
    msgs = items(r, "message")
    parts = msgs[-1].get("content", []) if msgs else []
    return "".join(p.get("text", "") for p in parts if p.get("type") == "output_text")


def reasoning_text(r: dict[str, Any]) -> str:
    return " ".join(c.get("text", "") for o in items(r, "reasoning") for c in o.get("content") or [])


def evaluate_sample(client: Server, s: Sample) -> Outcome:
    t = s.task
    first = client.respond(request(s))
    completed = first.get("status") == "completed"
    analysis = client.tokens(reasoning_text(first))
    effort = s.effort.value.lower()
    call = next((i for i in t.turn if isinstance(i, BuiltinCall | FunctionCall)), None)
    if isinstance(call, BuiltinCall):  # the server ran the python tool inside this one response
        code = [o.get("code", "") for o in items(first, "code_interpreter_call")]
        ok = code == [call.arguments] and str(t.expected["value"]) in answer(first)
        return Outcome(t.family, effort, completed, completed and ok, analysis, got=f"{code} -> {answer(first)!r}")
    if isinstance(call, FunctionCall):
        calls = items(first, "function_call")
        made = [f"{c.get('name')}({c.get('arguments')})" for c in calls]
        if not (completed and len(calls) == 1 and calls[0].get("name") == call.name):
            return Outcome(t.family, effort, completed, False, analysis, got=f"{made} {answer(first)!r}")
        try:
            args_ok = json.loads(calls[0].get("arguments", "")) == json.loads(call.arguments)
        except json.JSONDecodeError:
            args_ok = False
        reply = next(i for i in t.turn if isinstance(i, FunctionOutput))
        second = client.respond(
            {
                "previous_response_id": first["id"],
                "input": [{"type": "function_call_output", "call_id": calls[0]["call_id"], "output": reply.output}],
                "tools": request(s)["tools"],
                "reasoning": {"effort": effort},
            }
        )
        completed = second.get("status") == "completed"
        ok = args_ok and completed and answer(second).strip() == t.expected["answer"]
        return Outcome(t.family, effort, completed, ok, analysis, got=f"{made} -> {answer(second)!r}")
    text = answer(first)
    if t.family == "extraction":
        assert t.response_format is not None
        try:
            value = json.loads(text)
            jsonschema.validate(value, t.response_format.schema)
            valid = True
        except (json.JSONDecodeError, jsonschema.ValidationError):
            value, valid = None, False
        correct = completed and value == t.expected["fields"]
        return Outcome(t.family, effort, completed, correct, analysis, valid, got=text)
    return Outcome(t.family, effort, completed, completed and text.strip() == t.expected["answer"], analysis, got=text)


def summarize(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for family in sorted({o.family for o in outcomes}):
        mine = [o for o in outcomes if o.family == family]
        row: dict[str, Any] = {"n": len(mine), "correct": sum(o.correct for o in mine) / len(mine)}
        row["completed"] = sum(o.completed for o in mine) / len(mine)
        if family == "extraction":
            row["schema_valid"] = sum(bool(o.schema_valid) for o in mine) / len(mine)
        table[family] = row
    for effort in ("low", "medium", "high"):
        lengths = [o.analysis_tokens for o in outcomes if o.effort == effort]
        table[f"median_analysis_{effort}"] = statistics.median(lengths) if lengths else None
    return table


def run(
    url: str, per_family: int, seed: int = EVAL_SEED, workers: int = 4, follow_up: bool = False
) -> tuple[list[Outcome], dict[str, Any]]:
    """`follow_up`: each prompt (but extraction's) comes after an earlier exchange, as a chat's second question."""
    client = Client(url)
    samples = generate(len(FAMILIES) * per_family, seed, earlier=1.0 if follow_up else 0.0)
    with ThreadPoolExecutor(workers) as pool:
        outcomes = list(pool.map(lambda s: replace(evaluate_sample(client, s), asked=user_text(s)), samples))
    return outcomes, summarize(outcomes)


@contextlib.contextmanager
def started_server(model: str | None, ready_s: float = 300.0) -> Iterator[str]:
    """`gptoss serve --python` on a free local port (its log goes to this process's stderr) -> its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "gptoss", "serve", "--python", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen([*argv, *(["--model", model] if model else [])])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while not _healthy(url):
            if proc.poll() is not None:
                raise RuntimeError(f"gptoss serve exited with status {proc.returncode} before it was ready")
            if time.monotonic() > deadline:
                raise RuntimeError(f"gptoss serve was not ready within {ready_s:.0f} s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gptoss.demo.serve_eval", description=__doc__)
    parser.add_argument("url", nargs="?", help="a running server started with --python, e.g. http://127.0.0.1:8000 "
                        "(without it: start one)")  # fmt: skip
    parser.add_argument("--model", help="the server this starts (no URL): its --model (default: the demo model)")
    parser.add_argument("--per-family", type=int, default=200)
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--workers", type=int, default=4, help="requests in flight")
    parser.add_argument("--follow-up", action="store_true",
                        help="ask each question after an earlier exchange (a chat's second turn)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.url and args.model:
        parser.error("--model is for the server this starts; with a URL, the server's own model is evaluated")
    with contextlib.nullcontext(args.url) if args.url else started_server(args.model) as url:
        outcomes, table = run(url, args.per_family, args.seed, args.workers, args.follow_up)
    for o in outcomes:
        print(json.dumps(asdict(o)))
    print(json.dumps(table))


if __name__ == "__main__":
    main()
