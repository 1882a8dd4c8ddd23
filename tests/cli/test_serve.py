"""`gptoss serve` as a real process: the real engine on a tiny random checkpoint (whose output is garbage harmony)
gives well-formed responses on every endpoint, and stored responses survive a restart of the process."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gptoss.cli.__main__ import build_parser, main
from gptoss.cli.serve import server_config
from gptoss.tools import LocalIndex, WebFetcher
from tests.engine.checkpoints import tiny_random_home as make_home
from tests.server.wire import connect, read_until_closed, statuses

RESPONSE_STATUSES = {"completed", "incomplete"}
INCOMPLETE_REASONS = {"max_output_tokens"}


@pytest.fixture(scope="module")
def tiny_random_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_home(tmp_path_factory)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    proc: subprocess.Popen[str]
    url: str

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0, timeout=60)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        return err


def start(home: Path, store: Path, *extra: str, model: str | None = "tiny-random") -> Process:
    """`gptoss serve` on a free port; `model=None` starts it without --model (the built-in demo model)."""
    port = free_port()
    env = {**os.environ, "XDG_DATA_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    argv = [
        sys.executable,
        "-m",
        "gptoss",
        "serve",
        "--port",
        str(port),
        "--store",
        str(store),
        "--log-level",
        "warning",
        *(["--model", model] if model else []),
        *extra,
    ]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gptoss serve exited with {proc.returncode}: {proc.communicate()[1]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return Process(proc, url)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("gptoss serve did not become healthy within 90 s")


@pytest.fixture(scope="module")
def first_server(tiny_random_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Path]]:
    store = tmp_path_factory.mktemp("serve") / "responses.sqlite3"
    process = start(tiny_random_home, store)
    yield process, store
    if process.proc.poll() is None:
        process.stop()


def check_response(r: openai.types.responses.Response) -> None:
    assert r.status in RESPONSE_STATUSES
    if r.status == "incomplete":
        assert r.incomplete_details is not None and r.incomplete_details.reason in INCOMPLETE_REASONS
    for item in r.output:
        assert item.type in ("reasoning", "message", "function_call") and item.id
    assert r.usage is not None and 0 < r.usage.output_tokens <= 8
    assert r.model == "tiny-random"


def test_garbage_harmony_still_gives_well_formed_responses(first_server: tuple[Process, Path]) -> None:
    client = first_server[0].client()
    check_response(client.responses.create(input="hi", max_output_tokens=8, temperature=0, model="tiny-random"))
    events = list(client.responses.create(input="hi", max_output_tokens=8, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type in ("response.completed", "response.incomplete")
    added = [e.output_index for e in events if e.type == "response.output_item.added"]  # type: ignore[union-attr]
    done = [e.output_index for e in events if e.type == "response.output_item.done"]  # type: ignore[union-attr]
    assert added == done
    check_response(events[-1].response)  # type: ignore[union-attr]


def test_chat_and_completions_on_the_real_engine(first_server: tuple[Process, Path]) -> None:
    client = first_server[0].client()
    chat = client.chat.completions.create(
        model="tiny-random", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert chat.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert chat.usage is not None and chat.usage.completion_tokens <= 4
    text = client.completions.create(model="tiny-random", prompt="<|start|>user<|message|>hi", max_tokens=3)
    assert text.usage is not None and text.usage.completion_tokens == 3


def test_a_repeated_prompt_reports_cached_tokens_and_metrics_count_them(first_server: tuple[Process, Path]) -> None:
    client = first_server[0].client()
    long = "tell me about caches " * 40  # well past one 64-token block
    for api in ("chat", "responses"):
        cached = []
        for _ in range(2):
            if api == "chat":
                chat = client.chat.completions.create(
                    model="tiny-random", messages=[{"role": "user", "content": long}], max_tokens=2
                )
                assert chat.usage is not None and chat.usage.prompt_tokens_details is not None
                cached.append(chat.usage.prompt_tokens_details.cached_tokens)
            else:
                r = client.responses.create(input=long, max_output_tokens=2)
                assert r.usage is not None
                cached.append(r.usage.input_tokens_details.cached_tokens)
        assert cached[1] is not None and cached[1] >= 128, (api, cached)
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(first_server[0].url + "/metrics").text)}
    hit = families["gptoss_prefix_cache_hit_tokens"].samples[0].value
    assert hit >= 256 and families["gptoss_kv_blocks_free"].samples[0].value > 0
    assert families["gptoss_kv_blocks_used"].samples[0].value == 0  # nothing running
    assert {"gptoss_preemptions", "gptoss_batch_size", "gptoss_prefix_cache_hit_rate"} <= set(families)


def test_a_resent_history_reuses_everything_before_the_answered_turn(first_server: tuple[Process, Path]) -> None:
    client = first_server[0].client()
    history: list[dict[str, str]] = [{"role": "user", "content": "describe the ocean floor " * 30}]
    first = client.chat.completions.create(model="tiny-random", messages=history, max_tokens=3)  # type: ignore[arg-type]
    assert first.usage is not None
    # The next turn drops the first turn's reasoning, so its prompt leaves the first one exactly where that ended.
    history += [{"role": "assistant", "content": "It is deep."}, {"role": "user", "content": "and the coast?"}]
    second = client.chat.completions.create(model="tiny-random", messages=history, max_tokens=3)  # type: ignore[arg-type]
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens // 64 * 64


def test_a_previous_response_id_follow_up_reuses_the_conversation(first_server: tuple[Process, Path]) -> None:
    client = first_server[0].client()
    first = client.responses.create(input="list the planets " * 40, max_output_tokens=3)
    follow = client.responses.create(input="and moons?", previous_response_id=first.id, max_output_tokens=3)
    assert first.usage is not None and follow.usage is not None
    assert follow.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens // 64 * 64


def test_stored_responses_survive_a_restart(first_server: tuple[Process, Path], tiny_random_home: Path) -> None:
    process, store = first_server
    stored = process.client().responses.create(input="remember me", max_output_tokens=4, metadata={"n": "1"})
    err = process.stop()
    assert "--model tiny-random: using a tiny RANDOM checkpoint" in " ".join(err.split())
    again = start(tiny_random_home, store)
    try:
        client = again.client()
        assert client.responses.retrieve(stored.id).model_dump() == stored.model_dump()
        follow = client.responses.create(input="and now?", previous_response_id=stored.id, max_output_tokens=1)
        assert follow.previous_response_id == stored.id
        client.responses.delete(stored.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(stored.id)
    finally:
        again.stop()


def stream_events(url: str, body: dict[str, object]) -> list[dict[str, object]]:
    with httpx.stream("POST", url + "/v1/responses", json={**body, "stream": True}, timeout=60) as r:
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]


def wait_generating(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while "\ngptoss_running 1.0" not in httpx.get(url + "/metrics", timeout=5).text:
        assert time.monotonic() < deadline, "generation did not start"
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_a_generation_drains_and_exits_0(
    tiny_random_home: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    store = tmp_path / "responses.sqlite3"
    process = start(tiny_random_home, store, "--drain-s", "1", "--log-level", "info", "--header-timeout-s", "1")
    data, took = read_until_closed(connect(process.url), timeout=5)  # the flag reaches the HTTP edge
    assert statuses(data) == [408] and took < 2
    kept = process.client().responses.create(input="keep me", max_output_tokens=2, metadata={"k": "v"})
    result: list[list[dict[str, object]]] = []
    body = {"input": "go on", "max_output_tokens": 3000, "temperature": 1.0}
    thread = threading.Thread(target=lambda: result.append(stream_events(process.url, body)), daemon=True)
    thread.start()
    wait_generating(process.url, 30)
    process.proc.send_signal(sig)
    _, err = process.proc.communicate(timeout=30)
    thread.join(timeout=10)
    assert process.proc.returncode == 0, err
    assert f"stopped ({sig.name}); the engine is closed" in err
    final = result[0][-1]  # the in-flight response ended with a clean last event: done, or cancelled by the drain
    assert final["type"] in ("response.completed", "response.incomplete"), final["type"]
    status = final["response"]["status"]  # type: ignore[index]
    reason = (final["response"]["incomplete_details"] or {}).get("reason")  # type: ignore[index]
    assert (status, reason) in (("completed", None), ("cancelled", None), ("incomplete", "max_output_tokens"))
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = dict(db.execute("SELECT id, response FROM responses").fetchall())
    stored = json.loads(rows[kept.id])
    assert (stored["id"], stored["status"], stored["metadata"]) == (kept.id, kept.status, {"k": "v"})
    in_flight = final["response"]["id"]  # type: ignore[index]
    assert (in_flight in rows) == (status != "cancelled")  # a cancelled response is not stored


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "70000"], "--port must be in 0..65535, got 70000"),
        (["--drain-s", "-1"], "--drain-s must be >= 0, got -1"),
        (["--header-timeout-s", "0"], "--header-timeout-s must be positive, got 0"),
        (["--body-timeout-s", "-2.5"], "--body-timeout-s must be positive, got -2.5"),
        (["--max-queue", "-1"], "--max-queue must be >= 0, got -1"),
        (["--context", "0"], "--context must be positive, got 0"),
        (["--store-max-mb", "0"], "--store-max-mb must be positive, got 0"),
        (["--model", "/nonexistent/ckpt"], "/nonexistent/ckpt: no such directory"),
        (["--max-tool-rounds", "-1"], "--max-tool-rounds must be >= 0, got -1"),
        (["--max-reasoning-tokens", "-1"], "--max-reasoning-tokens must be >= 0, got -1"),
        (["--browser-web"], "--browser-web needs --browser-dir (the search index)"),
        (["--browser-dir", "/nonexistent/docs"], "--browser-dir /nonexistent/docs: no such directory"),
        (["--max-running", "0"], "--max-running must be >= 1, got 0"),
        (["--max-step-tokens", "0"], "--max-step-tokens must be >= 1, got 0"),
        (["--kv-cache-gb", "-1"], "--kv-cache-gb must be positive, got -1.0"),
    ],
)
def test_bad_arguments_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", *argv]) == 2
    assert message in capsys.readouterr().err


def test_busy_port_is_one_line_and_exit_2_before_anything_loads(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
        argv = [sys.executable, "-m", "gptoss", "serve", "--port", str(port)]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == (
        f"gptoss serve: error: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(another server is running there? pick another --port)\n"
    )
    assert not (tmp_path / "data").exists()  # the tiny random checkpoint was not even created


def test_unresolvable_host_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "no-such-host.invalid", "--port", "0"]) == 2
    assert "--host no-such-host.invalid: cannot resolve it" in capsys.readouterr().err


def test_tool_options_configure_the_builtin_tools(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\nalpha\n")
    parse = build_parser().parse_args
    plain = server_config(parse(["serve", "--store", str(tmp_path / "s")]), tmp_path)
    assert plain.browser is None and plain.python is None and plain.max_tool_rounds == 16
    args = parse(["serve", "--browser-dir", str(tmp_path), "--max-tool-rounds", "4"])
    offline = server_config(args, tmp_path)
    tool = offline.browser() if offline.browser is not None else None
    assert tool is not None and [type(b) for b in tool.backends] == [LocalIndex]
    assert offline.max_tool_rounds == 4 and offline.python is None
    web = server_config(parse(["serve", "--browser-dir", str(tmp_path), "--browser-web"]), tmp_path)
    assert web.browser is not None and [type(b) for b in web.browser().backends] == [LocalIndex, WebFetcher]
    python = server_config(parse(["serve", "--python"]), tmp_path)
    assert python.python is not None
    tool_py = python.python()
    assert python.python_unavailable == tool_py.unavailable_reason()
    tool_py.close()
