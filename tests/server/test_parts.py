"""The small parts alone: stop matching, the response store, SSE keep-alive, error locations, metrics text."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gptoss.engine import Engine, Finish, GenerationStats
from gptoss.server.config import ServerConfig
from gptoss.server.errors import data_path, param_name
from gptoss.server.generation import StopMatcher
from gptoss.server.metrics import Metrics
from gptoss.server.sse import KEEPALIVE, frame, with_keepalive
from gptoss.server.store import ResponseStore, UnencodableError


@pytest.mark.parametrize(
    ("stops", "pieces", "emitted", "stopped"),
    [
        (["END"], ["abc", "dEN", "Dxyz"], "abcd", True),
        (["END"], ["abc", "dEN", "x"], "abcdENx", False),
        (["a", "bc"], ["xxb", "cyy"], "xx", True),
        ([], ["all ", "of it"], "all of it", False),
        (["\n\n"], ["line\n", "\nnext"], "line", True),
    ],
)
def test_stop_matcher(stops: list[str], pieces: list[str], emitted: str, stopped: bool) -> None:
    m = StopMatcher(stops)
    out = "".join(m.feed(p) for p in pieces) + m.flush()
    assert (out, m.stopped) == (emitted, stopped)
    if stopped:
        assert m.feed("more") == ""


def test_stop_matcher_holds_back_only_a_possible_prefix() -> None:
    m = StopMatcher(["STOP"])
    assert m.feed("hello S") == "hello "  # 'S' could still begin 'STOP'
    assert m.feed("x") == "Sx"
    assert m.feed("ST") == "" and m.feed("OP") == "" and m.stopped


def test_store_round_trip_replace_delete(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "a" / "r.db", max_bytes=10_000)
    assert store.put("r1", {"id": "r1", "n": 1}, [{"kind": "text"}])
    assert store.get("r1").response == {"id": "r1", "n": 1}  # type: ignore[union-attr]
    assert store.put("r1", {"id": "r1", "n": 2}, [])
    assert store.get("r1").response["n"] == 2  # type: ignore[union-attr]
    assert store.delete("r1") and not store.delete("r1")
    assert store.get("r1") is None


def test_store_evicts_oldest_beyond_the_bound(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "r.db", max_bytes=1000)
    for i in range(10):
        assert store.put(f"r{i}", {"pad": "x" * 200}, [])
    kept = [i for i in range(10) if store.get(f"r{i}") is not None]
    assert kept == [6, 7, 8, 9]
    assert store.total_bytes() <= 1000
    assert not store.put("big", {"pad": "x" * 2000}, [])  # larger than the bound on its own: refused
    assert store.get("big") is None and store.get("r9") is not None


def test_store_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    first = ResponseStore(path, 10_000)
    first.put("r1", {"id": "r1"}, [{"kind": "text", "role": "user", "text": "hi", "channel": None}])
    first.close()
    again = ResponseStore(path, 10_000)
    stored = again.get("r1")
    assert stored is not None and stored.history[0]["text"] == "hi"


def test_store_refuses_text_that_is_not_valid_unicode(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "r.db", 10_000)
    with pytest.raises(UnencodableError, match="response r1 holds text that is not valid Unicode: surrogates not"):
        store.put("r1", {"id": "r1", "instructions": "\ud800"}, [])
    with pytest.raises(UnencodableError):
        store.put("r1", {"id": "r1"}, [{"text": "x\udfff"}])
    assert store.get("r1") is None and store.total_bytes() == 0


def test_store_counts_utf8_bytes_and_keeps_text_exactly(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "r.db", 10_000)
    store.put("r1", {"t": "é\U0001f600"}, [])
    assert store.total_bytes() == len('{"t": "é\U0001f600"}'.encode()) + 2 * len(b"[]")  # history, input items
    assert store.get("r1").response == {"t": "é\U0001f600"}  # type: ignore[union-attr]


def test_store_keeps_input_items_as_long_as_their_response(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "r.db", 300)
    store.put("r1", {"id": "r1"}, [], [{"id": "msg_1", "type": "message"}])
    assert store.input_items("r1") == [{"id": "msg_1", "type": "message"}]
    assert store.input_items("nope") is None
    store.put("r2", {"id": "r2", "pad": "x" * 260}, [], [])  # evicts r1
    assert store.get("r1") is None and store.input_items("r1") is None and store.input_items("r2") == []
    assert store.delete("r2") and store.input_items("r2") is None
    with sqlite3.connect(tmp_path / "r.db") as db:
        assert db.execute("SELECT COUNT(*) FROM input_items").fetchone() == (0,)


def test_store_rows_written_before_the_check_are_still_readable(tmp_path: Path) -> None:
    """Older servers stored lone surrogates (as \\ud800 escapes); reading such a row gives U+FFFD instead."""
    path = tmp_path / "r.db"
    ResponseStore(path, 10_000).close()
    with sqlite3.connect(path) as db:
        row = ("old", 0.0, 10, json.dumps({"id": "old", "instructions": "a\ud800b"}), json.dumps([]))
        db.execute("INSERT INTO responses (id, created, bytes, response, history) VALUES (?, ?, ?, ?, ?)", row)
    stored = ResponseStore(path, 10_000).get("old")
    assert stored is not None and stored.response["instructions"] == "a\ufffdb"
    json.dumps(stored.response, ensure_ascii=False).encode()  # it can be sent


def test_keepalive_fills_idle_gaps_and_closes_the_producer() -> None:
    closed = []

    async def slow() -> AsyncGenerator[bytes, None]:
        try:
            yield b"a"
            await asyncio.sleep(0.05)
            yield b"b"
            await asyncio.sleep(10)
            yield b"never"
        finally:
            closed.append(True)

    async def main() -> list[bytes]:
        out = []
        stream = with_keepalive(slow(), 0.02)
        async for chunk in stream:
            out.append(chunk)
            if chunk == b"b":
                break
        await stream.aclose()  # type: ignore[attr-defined]
        return out

    out = asyncio.run(main())
    assert out[0] == b"a" and out[-1] == b"b" and KEEPALIVE in out
    assert closed == [True]


def test_frames() -> None:
    assert frame({"a": "é"}) == 'data: {"a":"é"}\n\n'.encode()
    assert frame({"type": "x"}, "x") == b'event: x\ndata: {"type":"x"}\n\n'


def test_error_locations_skip_union_labels() -> None:
    body = {"messages": [{"role": "user", "content": [1]}]}
    assert data_path(("messages", 0, "user", "content"), body) == ["messages", 0, "content"]
    assert data_path(("input", "str"), {"input": 5}) == ["input"]
    assert data_path(("messages", 0, "tool", "tool_call_id"), {"messages": [{}]}) == ["messages", 0, "tool_call_id"]
    assert param_name(["tools", 1, "function", "name"]) == "tools[1].function.name"
    assert param_name([]) is None


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="default reasoning effort must be one of low, medium, high, got 'max'"):
        ServerConfig(default_effort="max")
    with pytest.raises(ValueError, match="must be positive"):
        ServerConfig(store_max_bytes=0)


def test_metrics_text_parses_and_counts_generations() -> None:
    engine = Engine(None)
    metrics = Metrics(engine)
    stats = GenerationStats(10, 0.0, 0.1, 0.5, 1.5, 11, Finish.STOP)
    metrics.observe_generation(stats)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    value = {f: families[f].samples[0].value for f in ("gptoss_prompt_tokens", "gptoss_output_tokens", "gptoss_ready")}
    assert value == {"gptoss_prompt_tokens": 10, "gptoss_output_tokens": 11, "gptoss_ready": 0}
    ttft = [s for s in families["gptoss_time_to_first_token_seconds"].samples if s.name.endswith("_sum")]
    assert ttft[0].value == pytest.approx(0.5)
    rate = [s for s in families["gptoss_decode_tokens_per_second"].samples if s.name.endswith("_sum")]
    assert rate[0].value == pytest.approx(10.0)
    assert {"gptoss_queue_depth", "gptoss_running", "gptoss_requests"} <= set(families)
    engine.close()
