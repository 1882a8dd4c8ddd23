"""Request text that is not valid Unicode (a lone surrogate escape) is a 400 naming the field, before anything is
stored or queued, on both APIs, streaming or not; the server stays healthy and every stored response stays readable."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gptoss.server.unicode import lone_surrogate, scrub
from tests.server.conftest import MODEL, Running, serve
from tests.server.wire import metric

RESPONSES, CHAT = "/v1/responses", "/v1/chat/completions"
BAD = "\\ud800"  # as written in the JSON text: an escape json.loads turns into a lone surrogate
MESSAGE = "the text holds a lone UTF-16 surrogate (an unpaired \\uD800-\\uDFFF escape), which is not valid Unicode."


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = serve(tmp_path_factory.mktemp("u") / "s.db")
    yield running
    running.stop()


# (id, path, JSON body text with a lone surrogate escape, where the message says it is, param)
CASES = [
    ("resp-instructions", RESPONSES, f'{{"model":"{MODEL}","input":"hi","instructions":"x{BAD}"}}', "'instructions'",
     "instructions"),
    ("resp-metadata-value", RESPONSES, f'{{"model":"{MODEL}","input":"hi","metadata":{{"k":"{BAD}"}}}}',
     "'metadata.k'", "metadata.k"),
    ("resp-metadata-key", RESPONSES, f'{{"model":"{MODEL}","input":"hi","metadata":{{"{BAD}":"v"}}}}',
     "a key of 'metadata'", "metadata"),
    ("resp-input-text", RESPONSES, f'{{"model":"{MODEL}","input":"{BAD}"}}', "'input'", "input"),
    ("resp-input-item", RESPONSES,
     f'{{"model":"{MODEL}","input":[{{"role":"user","content":"a{BAD}b"}}]}}', "'input[0].content'",
     "input[0].content"),
    ("chat-content", CHAT, f'{{"model":"{MODEL}","messages":[{{"role":"user","content":"{BAD}"}}]}}',
     "'messages[0].content'", "messages[0].content"),
    ("chat-metadata", CHAT,
     f'{{"model":"{MODEL}","messages":[{{"role":"user","content":"hi"}}],"metadata":{{"k":"{BAD}"}}}}',
     "'metadata.k'", "metadata.k"),
    ("chat-low-surrogate", CHAT, f'{{"model":"{MODEL}","messages":[{{"role":"user","content":"\\udc00"}}]}}',
     "'messages[0].content'", "messages[0].content"),
    ("top-level-key", CHAT, f'{{"model":"{MODEL}","{BAD}":1}}', "a key of the body", None),
]  # fmt: skip


def stored_ids(running: Running) -> list[str]:
    path = running.server.config.app.state.gptoss.config.store_path
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT id FROM responses")]


def healthy_afterwards(running: Running) -> None:
    """/health answers, nothing runs (back to 0 within 1 s), every stored response can be read back."""
    with running.http() as http:
        assert http.get("/health").status_code == 200
        deadline = time.monotonic() + 1
        while metric(running.url, "gptoss_running") != 0:
            assert time.monotonic() < deadline, "gptoss_running did not go back to 0 within 1 s"
            time.sleep(0.02)
        ids = stored_ids(running)
        assert ids, "the fixture stores a response first"
        for response_id in ids:
            got = http.get(f"/v1/responses/{response_id}")
            assert got.status_code == 200 and got.json()["id"] == response_id


@pytest.mark.parametrize("stream", [False, True], ids=["wait", "stream"])
@pytest.mark.parametrize(("path", "body", "where", "param"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_lone_surrogate_is_a_400_naming_the_field(
    srv: Running, path: str, body: str, where: str, param: str | None, stream: bool
) -> None:
    with srv.http() as http:
        assert http.post(RESPONSES, json={"model": MODEL, "input": "keep me"}).status_code == 200
        before = len(stored_ids(srv))
        prompts = len(srv.source.prompts)
        sent = body[:-1] + ',"stream":true}' if stream else body
        r = http.post(path, content=sent.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["message"] == f"Invalid value for {where}: {MESSAGE}"
    assert (error["param"], error["code"], error["type"]) == (param, "invalid_value", "invalid_request_error")
    assert len(srv.source.prompts) == prompts  # nothing was queued
    assert len(stored_ids(srv)) == before  # nothing was stored
    healthy_afterwards(srv)


def test_a_surrogate_pair_is_one_valid_character(srv: Running) -> None:
    body = f'{{"model":"{MODEL}","input":"hi","instructions":"\\ud83d\\ude00","metadata":{{"k":"\\ud83d\\ude00"}}}}'
    with srv.http() as http:
        r = http.post(RESPONSES, content=body.encode(), headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        assert r.json()["instructions"] == "\U0001f600" and r.json()["metadata"] == {"k": "\U0001f600"}
        again = http.get(f"/v1/responses/{r.json()['id']}")
    assert again.json() == r.json()


def test_raw_utf8_text_passes_unchanged(srv: Running) -> None:
    with srv.http() as http:
        r = http.post(RESPONSES, json={"model": MODEL, "input": "héllo ☃ 𝄞", "instructions": "ça va"})
    assert r.status_code == 200 and r.json()["instructions"] == "ça va"


def test_lone_surrogate_paths() -> None:
    assert lone_surrogate({"a": [1, {"b": "ok"}, {"c": "x\ud800"}]}) == (["a", 2, "c"], False)
    assert lone_surrogate({"a": {"\udfff": 1}}) == (["a"], True)
    assert lone_surrogate({"a": ["fine", "\U0001f600"]}) is None
    deep: Any = "\ud800"
    for _ in range(5000):  # deeper than Python's recursion limit: the walk is iterative
        deep = [deep]
    assert lone_surrogate(deep) == ([0] * 5000, False)


def test_scrub_replaces_lone_surrogates() -> None:
    assert scrub({"a\ud800": ["x\udc00y", 1, None]}) == {"a\ufffd": ["x\ufffdy", 1, None]}
