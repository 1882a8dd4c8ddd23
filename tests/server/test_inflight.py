"""One rule: whatever ends a request, its generations are cancelled and the engine is free at once. Here a stream
fails on the server's side (at its first frame, as a lone surrogate once made it, or midway), on every streaming
endpoint and inside the built-in tool loop; and a shutdown drain runs out with requests still generating."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gptoss.server import chat_completions, completions, responses
from tests.engine.scripted import ScriptedSource
from tests.server.conftest import MODEL, Running, serve, tokens
from tests.server.test_builtin_tools import CODE, EchoPython

LONG = "<|channel|>final<|message|>" + "word " * 3000 + "<|return|>"
SHORT = "<|channel|>final<|message|>done<|return|>"


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    source = ScriptedSource(default=tokens(LONG), delay=0.005)
    running = serve(tmp_path_factory.mktemp("f") / "s.db", source, python=EchoPython)
    yield running
    running.stop()


def failing_frame(real: Callable[..., bytes], at: int) -> Callable[..., bytes]:
    """`frame` that raises (as encoding a lone surrogate did) on its `at`-th call."""
    calls = [0]

    def frame(data: dict[str, Any], event: str | None = None) -> bytes:
        calls[0] += 1
        if calls[0] == at:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return real(data, event)

    return frame


def read_stream(running: Running, path: str, body: dict[str, Any]) -> str:
    with running.http() as http, http.stream("POST", path, json={**body, "stream": True}) as r:
        assert r.status_code == 200
        return "".join(r.iter_text())  # the body ends properly: no truncated chunked encoding


def engine_freed(running: Running, within: float) -> None:
    deadline = time.monotonic() + within
    while running.engine.stats().running or running.engine.stats().waiting:
        assert time.monotonic() < deadline, f"the engine was still busy {within} s after the stream failed"
        time.sleep(0.002)
    steps = running.source.steps
    time.sleep(0.1)
    assert running.source.steps == steps  # nothing generates on in the background


ENDPOINTS = [
    (responses, "/v1/responses", {"model": MODEL, "input": "hi"}),
    (chat_completions, "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
    (completions, "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 3000}),
]


@pytest.mark.parametrize("at", [1, 30], ids=["first-frame", "midway"])
@pytest.mark.parametrize(("module", "path", "body"), ENDPOINTS, ids=["responses", "chat", "completions"])
def test_a_failing_stream_frees_the_engine_and_ends_with_an_error_event(
    slow: Running,
    monkeypatch: pytest.MonkeyPatch,
    logs: pytest.LogCaptureFixture,
    module: Any,
    path: str,
    body: dict[str, Any],
    at: int,
) -> None:
    monkeypatch.setattr(module, "frame", failing_frame(module.frame, at))
    logs.set_level(logging.ERROR)
    text = read_stream(slow, path, body)
    engine_freed(slow, within=0.2)
    last = text.rstrip("\n").split("\n\n")[-1]
    assert last.startswith("event: error\ndata: ")
    error = json.loads(last.split("data: ", 1)[1])["error"]
    assert error["message"] == "The server failed while streaming; the response was stopped."
    assert [r.getMessage() for r in logs.records] == [f"the event stream of POST {path} failed"]  # logged once


def test_a_stream_failing_inside_the_tool_loop_frees_the_engine(slow: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """The python call runs, the second generation starts, then the stream fails: that generation is cancelled."""
    slow.source.queue(tokens(CODE), tokens(LONG))
    prompts = len(slow.source.prompts)
    monkeypatch.setattr(responses, "frame", failing_frame(responses.frame, 60))  # in the second generation
    body = {"model": MODEL, "input": "compute", "tools": [{"type": "code_interpreter"}]}
    text = read_stream(slow, "/v1/responses", body)
    engine_freed(slow, within=0.2)
    assert "response.code_interpreter_call.completed" in text and len(slow.source.prompts) == prompts + 2
    assert text.rstrip("\n").split("\n\n")[-1].startswith("event: error")


def collect(results: dict[str, Any], key: str, work: Callable[[], Any]) -> threading.Thread:
    def run() -> None:
        try:
            results[key] = work()
        except Exception as e:  # reported by the assertions on `results`
            results[key] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def events_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def test_the_end_of_the_drain_cancels_what_runs_and_says_so(tmp_path: Path) -> None:
    running = serve(tmp_path / "s.db", ScriptedSource(default=tokens(LONG), delay=0.005), drain_s=0.5)
    url, results = running.url, {}
    chat_body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}

    def stream(path: str, body: dict[str, Any]) -> str:
        with httpx.Client(base_url=url, timeout=30) as http, http.stream("POST", path, json=body) as r:
            return "".join(r.iter_text())

    def wait(path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(url + path, json=body, timeout=30)

    resp_body = {"model": MODEL, "input": "a", "stream": True}
    comp_body = {"model": MODEL, "prompt": "c", "max_tokens": 3000}
    threads = [
        collect(results, "resp-stream", lambda: stream("/v1/responses", resp_body)),
        collect(results, "chat-stream", lambda: stream("/v1/chat/completions", chat_body)),
        collect(results, "resp-wait", lambda: wait("/v1/responses", {"model": MODEL, "input": "b"})),
        collect(results, "comp-wait", lambda: wait("/v1/completions", comp_body)),
    ]
    deadline = time.monotonic() + 5
    while running.engine.stats().running + running.engine.stats().waiting < 4:
        assert time.monotonic() < deadline, "the four requests did not all reach the engine"
        time.sleep(0.01)
    start = time.monotonic()
    running.server.should_exit = True  # what SIGTERM does
    for thread in threads:
        thread.join(timeout=10)
    running.thread.join(timeout=10)
    took = time.monotonic() - start
    assert not running.thread.is_alive() and 0.5 <= took < 3, took
    running.engine.close()

    final = events_of(results["resp-stream"])[-1]
    assert final["type"] == "response.incomplete"  # OpenAI has no response.cancelled event; the status says it
    assert (final["response"]["status"], final["response"]["incomplete_details"]) == ("cancelled", None)
    chat = results["chat-stream"].rstrip("\n").split("\n\n")
    assert chat[-1] == "data: [DONE]" and json.loads(chat[-2][6:])["error"]["code"] == "server_shutdown"
    waited = results["resp-wait"]
    assert waited.status_code == 200 and waited.json()["status"] == "cancelled"
    comp = results["comp-wait"]
    assert comp.status_code == 503
    assert comp.json()["error"]["message"] == (
        "The generation was cancelled before it finished: the server is shutting down. Retry the request."
    )


def test_a_request_that_finishes_within_the_drain_completes(tmp_path: Path) -> None:
    source = ScriptedSource(default=tokens("<|channel|>final<|message|>" + "ok " * 60 + "<|return|>"), delay=0.005)
    running = serve(tmp_path / "s.db", source, drain_s=5)
    results: dict[str, Any] = {}
    body = {"model": MODEL, "input": "a"}
    thread = collect(results, "r", lambda: httpx.post(running.url + "/v1/responses", json=body, timeout=30))
    while not running.engine.stats().running:
        time.sleep(0.005)
    running.server.should_exit = True
    thread.join(timeout=10)
    running.thread.join(timeout=10)
    running.engine.close()
    assert not running.thread.is_alive()
    assert results["r"].status_code == 200 and results["r"].json()["status"] == "completed"
