# ruff: noqa: E501  (the table of cases reads best one case per line)
"""Malformed requests get a 4xx with an OpenAI-style JSON error naming the problem; the server stays healthy.
Also: authentication, the bounded queue (429), loading (503)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.engine.scripted import ScriptedSource
from tests.server.conftest import ANSWER, MODEL, Running, serve, tokens

CHAT = "/v1/chat/completions"
RESP = "/v1/responses"
COMP = "/v1/completions"
USER = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": USER, **fields}


def resp(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": "hi", **fields}


def comp(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "hi", **fields}


# (id, method, path, body: dict | bytes | None, extra headers, status, message fragment, param)
CASES: list[tuple[str, str, str, Any, dict[str, str], int, str, str | None]] = [
    ("bad-json", "POST", CHAT, b'{"messages": [', {}, 400, "The request body is not valid JSON", None),
    ("json-array", "POST", CHAT, b"[]", {}, 400, "The request body must be a JSON object.", None),
    ("nan", "POST", CHAT, b'{"messages": [], "temperature": NaN}', {}, 400, "NaN is not valid JSON", None),
    ("infinity", "POST", CHAT, b'{"messages": [], "top_p": -Infinity}', {}, 400, "-Infinity is not valid JSON", None),
    ("deep-json", "POST", CHAT, b"[" * 100_000, {}, 400, "The request body is not valid JSON", None),
    ("bad-utf8", "POST", CHAT, b'{"messages": "\xff\xfe"}', {}, 400, "The request body is not valid UTF-8 (byte 14: invalid start byte).", None),
    ("utf8-surrogate", "POST", CHAT, b'{"messages": "\xed\xa0\x80"}', {}, 400, "The request body is not valid UTF-8 (byte 14:", None),
    ("utf16-body", "POST", CHAT, '{"messages": []}'.encode("utf-16"), {}, 400, "The request body is not valid UTF-8 (byte 0:", None),
    ("content-type", "POST", CHAT, b"{}", {"content-type": "text/plain"}, 415, "Content-Type must be application/json", None),
    ("too-large", "POST", CHAT, b" " * (8 << 20 | 1), {}, 413, "larger than 8388608 bytes", None),
    ("no-messages", "POST", CHAT, {"model": MODEL}, {}, 400, "Missing required parameter: 'messages'.", "messages"),
    ("empty-messages", "POST", CHAT, chat(messages=[]), {}, 400, "at least 1 item", "messages"),
    ("messages-not-list", "POST", CHAT, chat(messages="hi"), {}, 400, "valid list", "messages"),
    ("unknown-role", "POST", CHAT, chat(messages=[{"role": "wizard", "content": "x"}]), {}, 400, "'wizard'", "messages[0]"),
    ("image-part", "POST", CHAT, chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]), {}, 400,
     "part 0 has type 'image_url'; only text parts (text) are supported", "messages[0].content"),
    ("missing-content", "POST", CHAT, chat(messages=[{"role": "user"}]), {}, 400,
     "Missing required parameter: 'messages[0].content'.", "messages[0].content"),
    ("tool-call-no-function", "POST", CHAT, chat(messages=[{"role": "assistant", "tool_calls": [{"id": "c"}]}]), {},
     400, "Missing required parameter: 'messages[0].tool_calls[0].function'.", "messages[0].tool_calls[0].function"),
    ("tool-msg-no-id", "POST", CHAT, chat(messages=[{"role": "tool", "content": "x"}]), {}, 400,
     "Missing required parameter: 'messages[0].tool_call_id'.", "messages[0].tool_call_id"),
    ("unknown-field", "POST", CHAT, chat(foo=1), {}, 400, "Unrecognized request argument supplied: foo", "foo"),
    ("n-2", "POST", CHAT, chat(n=2), {}, 400, "Input should be 1", "n"),
    ("temperature-high", "POST", CHAT, chat(temperature=3), {}, 400, "less than or equal to 2", "temperature"),
    ("temperature-negative", "POST", CHAT, chat(temperature=-1), {}, 400, "greater than or equal to 0", "temperature"),
    ("temperature-string", "POST", CHAT, chat(temperature="hot"), {}, 400, "valid number", "temperature"),
    ("top-p-zero", "POST", CHAT, chat(top_p=0), {}, 400, "greater than 0", "top_p"),
    ("top-p-high", "POST", CHAT, chat(top_p=1.5), {}, 400, "less than or equal to 1", "top_p"),
    ("max-tokens-zero", "POST", CHAT, chat(max_tokens=0), {}, 400, "greater than or equal to 1", "max_tokens"),
    ("max-tokens-huge", "POST", CHAT, chat(max_tokens=10**9), {}, 400,
     "max_tokens is too large: 1000000000. This model's context is 4096 tokens", "max_tokens"),
    ("context-overflow", "POST", CHAT, chat(messages=[{"role": "user", "content": "word " * 5000}]), {}, 400,
     "This model's maximum context length is 4096 tokens. However, you requested", None),
    ("prompt-plus-max", "POST", CHAT, chat(max_completion_tokens=4050), {}, 400,
     "in the prompt, 4050 in the output)", "max_completion_tokens"),
    ("stop-too-many", "POST", CHAT, chat(stop=["a", "b", "c", "d", "e"]), {}, 400, "at most 4 stop sequences, got 5", "stop"),
    ("stop-empty", "POST", CHAT, chat(stop=[""]), {}, 400, "stop sequences must be non-empty", "stop"),
    ("seed-string", "POST", CHAT, chat(seed="abc"), {}, 400, "valid integer", "seed"),
    ("seed-huge", "POST", CHAT, chat(seed=2**65), {}, 400, "less than or equal to", "seed"),
    ("penalty", "POST", CHAT, chat(presence_penalty=0.5), {}, 400, "is not supported; only 0 is accepted", "presence_penalty"),
    ("effort", "POST", CHAT, chat(reasoning_effort="max"), {}, 400, "'minimal', 'low', 'medium' or 'high'", "reasoning_effort"),
    ("tool-choice-word", "POST", CHAT, chat(tool_choice="sometimes"), {}, 400, "'auto', 'none' or 'required'", "tool_choice"),
    ("tool-choice-unknown", "POST", CHAT, chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "g"}}),
     {}, 400, "tool_choice names function 'g', which is not in tools", "tool_choice"),
    ("required-no-tools", "POST", CHAT, chat(tool_choice="required"), {}, 400,
     "tool_choice 'required' needs at least one function in tools", "tool_choice"),
    ("tool-schema", "POST", CHAT, chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "strng"}}}]),
     {}, 400, "invalid JSON Schema", "tools[0].function.parameters"),
    ("tool-schema-not-object", "POST", CHAT, chat(tools=[{"type": "function", "function": {"name": "f", "parameters": [1]}}]),
     {}, 400, "valid dictionary", "tools[0].function.parameters"),
    ("tool-name", "POST", CHAT, chat(tools=[{"type": "function", "function": {"name": "get weather"}}]), {}, 400,
     "invalid function name 'get weather'", "tools[0].name"),
    ("tool-duplicate", "POST", CHAT, chat(tools=[TOOL, TOOL]), {}, 400, "duplicate function name 'f'", "tools[1].name"),
    ("tool-type", "POST", CHAT, chat(tools=[{"type": "retrieval"}]), {}, 400, "Input should be 'function'", "tools[0].type"),
    ("unknown-call-id", "POST", CHAT, chat(messages=[*USER, {"role": "tool", "tool_call_id": "x", "content": "r"}]), {}, 400,
     "no function call with call_id 'x' precedes its output", "messages"),
    ("format-type", "POST", CHAT, chat(response_format={"type": "xml"}), {}, 400, "'xml'", "response_format"),
    ("format-schema", "POST", CHAT, chat(response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": 5}}}),
     {}, 400, "invalid JSON Schema", "response_format.json_schema.schema"),
    ("top-logprobs-alone", "POST", CHAT, chat(top_logprobs=2), {}, 400, "top_logprobs requires logprobs to be true", "top_logprobs"),
    ("top-logprobs-many", "POST", CHAT, chat(logprobs=True, top_logprobs=21), {}, 400, "less than or equal to 20", "top_logprobs"),
    ("unknown-model", "POST", CHAT, chat(model="gpt-5"), {}, 404, "The model 'gpt-5' does not exist", "model"),
    ("resp-input-type", "POST", RESP, resp(input=5), {}, 400, "valid string", "input"),
    ("resp-item-type", "POST", RESP, resp(input=[{"type": "web_search_call"}]), {}, 400,
     "unsupported item type; expected message, reasoning, function_call or function_call_output", "input[0]"),
    ("resp-tool-type", "POST", RESP, resp(tools=[{"type": "file_search"}]), {}, 400,
     "tool 0 has type 'file_search'; supported types are 'function', 'web_search'", "tools"),
    ("resp-no-browser", "POST", RESP, resp(tools=[{"type": "web_search"}]), {}, 400,
     "The web_search tool is not enabled on this server: start it with --browser-dir DIR", "tools"),
    ("resp-no-browser-search", "POST", RESP, resp(tools=[{"type": "browser_search"}]), {}, 400,
     "The browser_search tool is not enabled on this server", "tools"),
    ("resp-no-python", "POST", RESP, resp(tools=[{"type": "code_interpreter", "container": {"type": "auto"}}]), {},
     400, "The code_interpreter tool is not enabled on this server: start it with --python.", "tools"),
    ("resp-metadata", "POST", RESP, resp(metadata={str(i): "v" for i in range(17)}), {}, 400, "at most 16 keys, got 17", "metadata"),
    ("resp-metadata-value", "POST", RESP, resp(metadata={"k": "v" * 513}), {}, 400, "longer than 512 characters", "metadata"),
    ("resp-previous", "POST", RESP, resp(previous_response_id="resp_nope"), {}, 400,
     "Previous response with id 'resp_nope' not found.", "previous_response_id"),
    ("resp-max-output", "POST", RESP, resp(max_output_tokens=0), {}, 400, "greater than or equal to 1", "max_output_tokens"),
    ("resp-effort", "POST", RESP, resp(reasoning={"effort": "extreme"}), {}, 400, "'minimal', 'low', 'medium' or 'high'",
     "reasoning.effort"),
    ("resp-background", "POST", RESP, resp(background=True), {}, 400, "Input should be False", "background"),
    ("resp-orphan-output", "POST", RESP, resp(input=[{"type": "function_call_output", "call_id": "c", "output": "x"}]), {},
     400, "no function call with call_id 'c' precedes its output", "input"),
    ("resp-format-name", "POST", RESP, resp(text={"format": {"type": "json_schema", "schema": {}}}), {}, 400,
     "Missing required parameter: 'text.format.name'.", "text.format.name"),
    ("resp-unknown-model", "POST", RESP, resp(model="o3"), {}, 404, "The model 'o3' does not exist", "model"),
    ("comp-missing-prompt", "POST", COMP, {"model": MODEL}, {}, 400, "Missing required parameter: 'prompt'.", "prompt"),
    ("comp-two-prompts", "POST", COMP, comp(prompt=["a", "b"]), {}, 400, "only one prompt per request is supported, got 2",
     "prompt"),
    ("comp-empty", "POST", COMP, comp(prompt=""), {}, 400, "the prompt is empty", "prompt"),
    ("comp-bad-token", "POST", COMP, comp(prompt=[1, 999999]), {}, 400,
     "token id 999999 at index 1 is outside the vocabulary", "prompt"),
    ("comp-echo", "POST", COMP, comp(echo=True), {}, 400, "Input should be False", "echo"),
    ("comp-logprobs", "POST", COMP, comp(logprobs=6), {}, 400, "less than or equal to 5", "logprobs"),
    ("no-route", "GET", "/v1/nothing", None, {}, 404, "Not found: no such route", None),
    ("wrong-method", "PUT", CHAT, None, {}, 405, "Method not allowed on this route", None),
    ("no-response", "GET", "/v1/responses/resp_missing", None, {}, 404, "No response found with id 'resp_missing'.",
     "response_id"),
    ("no-model", "GET", "/v1/models/gpt-5", None, {}, 404, "The model 'gpt-5' does not exist.", "model"),
]  # fmt: skip


def send(http: httpx.Client, method: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    if isinstance(body, bytes):
        return http.request(method, path, content=body, headers={"content-type": "application/json", **headers})
    return http.request(method, path, json=body, headers=headers)


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def http(shared: Running) -> Iterator[httpx.Client]:
    with shared.http() as client:
        yield client


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "headers", "status", "message", "param"), CASES, ids=[c[0] for c in CASES]
)
def test_malformed_request(
    http: httpx.Client,
    name: str,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    message: str,
    param: str | None,
) -> None:
    r = send(http, method, path, body, headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert message in error["message"]
    assert error["param"] == param
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert http.get("/health").status_code == 200
    ok = http.post(CHAT, json=chat())
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "Hello there!"


def api_routes(running: Running) -> list[tuple[str, str]]:
    """Every (path, method) the app serves, from its OpenAPI schema rather than a hand-written list."""
    paths = running.server.config.app.openapi()["paths"]  # type: ignore[attr-defined]
    return [(path, method.upper()) for path, methods in paths.items() for method in methods]


def test_authentication(tmp_path: Path) -> None:
    running = serve(tmp_path / "s.db", api_key="sekret")
    try:
        with httpx.Client(base_url=running.url) as anonymous:
            assert anonymous.get("/health").status_code == 200  # public
            routes = [(path, method) for path, method in api_routes(running) if path != "/health"]
            assert len(routes) >= 8
            for path, method in routes:
                r = anonymous.request(method, path.replace("{response_id}", "x").replace("{model_id:path}", "x"))
                assert r.status_code == 401, path
                assert r.json()["error"]["message"] == "Missing API key: send 'Authorization: Bearer KEY'."
            wrong = anonymous.get("/v1/models", headers={"Authorization": "Bearer sekreT"})
            assert (wrong.status_code, wrong.json()["error"]["type"]) == (401, "authentication_error")
            assert wrong.json()["error"]["message"] == "Incorrect API key provided."
        assert running.client().models.list().data[0].id == MODEL
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=running.url + "/v1", api_key="wrong", max_retries=0).models.list()
    finally:
        running.stop()


def test_queue_full_is_429_with_retry_after(tmp_path: Path) -> None:
    source = ScriptedSource(default=tokens("<|channel|>final<|message|>" + "x " * 500 + "<|return|>"), delay=0.01)
    running = serve(tmp_path / "s.db", source, max_queue=0)
    try:
        with running.http() as http, http.stream("POST", CHAT, json=chat(stream=True)) as busy:
            next(busy.iter_lines())
            r = http.post(CHAT, json=chat())
            assert r.status_code == 429
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"] == {
                "message": "the request queue is full (0 waiting); retry later",
                "type": "rate_limit_error",
                "param": None,
                "code": "queue_full",
            }
    finally:
        running.stop()


def test_503_until_the_model_is_loaded(tmp_path: Path) -> None:
    running = serve(tmp_path / "s.db", ready=False)
    try:
        with running.http() as http:
            health = http.get("/health")
            assert (health.status_code, health.json()["error"]["message"]) == (503, "The model is still loading.")
            r = http.post(CHAT, json=chat())
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "model_loading"
            running.engine.attach(ScriptedSource(default=tokens(ANSWER)))
            assert http.get("/health").json() == {"status": "ok", "model": MODEL}
            assert http.post(CHAT, json=chat()).status_code == 200
    finally:
        running.stop()


def test_a_failing_engine_gives_server_errors_not_crashes(tmp_path: Path) -> None:
    class Broken(ScriptedSource):
        def _replay(self, *args: Any) -> Any:
            yield from super()._replay(*args)
            raise RuntimeError("device lost")

    running = serve(tmp_path / "s.db", Broken(default=tokens("<|channel|>final<|message|>Hi")))
    try:
        with running.http() as http:
            r = http.post(CHAT, json=chat())
            assert (r.status_code, r.json()["error"]["message"]) == (500, "generation failed: device lost")
            failed = http.post(RESP, json=resp()).json()
            assert failed["status"] == "failed"
            assert failed["error"] == {"code": "server_error", "message": "generation failed: device lost"}
            lines = [
                json.loads(x[6:])
                for x in http.post(CHAT, json=chat(stream=True)).text.splitlines()
                if x.startswith("data: {")
            ]
            assert lines[-1] == {"error": {"message": "generation failed: device lost", "type": "server_error", "param": None,
                                           "code": "server_error"}}  # fmt: skip
            assert http.get("/health").status_code == 200
    finally:
        running.stop()


def test_errors_are_fast(http: httpx.Client) -> None:
    start = time.monotonic()
    for case in CASES[:20]:
        send(http, *case[1:5])
    assert time.monotonic() - start < 5
