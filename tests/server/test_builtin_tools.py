"""Built-in tools in the Responses API: the server runs browser / python calls in-loop over scripted model output."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gptoss.tools import BrowserTool, LocalIndex, PythonTool
from tests.engine.scripted import ScriptedSource
from tests.server.conftest import MODEL, Running, decode, serve, tokens


class EchoPython(PythonTool):
    """The python tool with execution replaced by a deterministic answer (the sandbox is tested in tests/tools)."""

    def execute(self, code: str, cancel: threading.Event | None = None) -> str:
        return f"ran {code.strip()!r}\n42\n"


SEARCH = (
    "<|channel|>analysis<|message|>Let me search.<|end|>"
    '<|start|>assistant to=browser.search<|channel|>analysis<|message|>{"query":"kiwi bird"}<|call|>'
)
OPEN = '<|channel|>analysis to=browser.open<|message|>{"id":0}<|call|>'
CITED = "<|channel|>final<|message|>Kiwis lay very large eggs【1†L3-L3】.<|return|>"
CODE = (
    "<|channel|>analysis<|message|>Compute it.<|end|>"
    "<|start|>assistant to=python<|channel|>analysis<|message|>print(6 * 7)<|call|>"
)
ANSWER42 = "<|channel|>final<|message|>It is 42.<|return|>"
CITED_TEXT = "Kiwis lay very large eggs ([docs.example](https://docs.example/kiwi.md))."


@pytest.fixture(scope="module")
def tools_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    docs = tmp_path_factory.mktemp("docs")
    (docs / "kiwi.md").write_text(
        "# Kiwi\n\nThe kiwi is a flightless bird from New Zealand.\nIt lays very large eggs.\n"
    )
    (docs / "emu.md").write_text("# Emu\n\nThe emu is a large bird from Australia.\n")
    index = LocalIndex(docs, base_url="https://docs.example/")
    running = serve(
        tmp_path_factory.mktemp("store") / "responses.sqlite3",
        ScriptedSource(default=tokens(ANSWER42)),
        browser=lambda: BrowserTool(index),
        python=EchoPython,
        max_tool_rounds=3,
    )
    yield running
    running.stop()


@pytest.fixture()
def srv(tools_srv: Running) -> Running:
    tools_srv.source.scripts.clear()
    tools_srv.source.prompts.clear()
    return tools_srv


def post(srv: Running, **body: Any) -> dict[str, Any]:
    with srv.http() as http:
        r = http.post("/v1/responses", json={"model": MODEL, "input": "Tell me about kiwis.", **body})
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def stream(srv: Running, **body: Any) -> list[dict[str, Any]]:
    events = []
    with srv.http() as http:
        payload = {"model": MODEL, "input": "Tell me about kiwis.", "stream": True, **body}
        with http.stream("POST", "/v1/responses", json=payload) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
    return events


def _decode(srv: Running, i: int) -> str:
    return decode(srv.source.prompts[i])


def test_browser_calls_run_in_loop_and_citations_become_annotations(srv: Running) -> None:
    srv.source.queue(tokens(SEARCH), tokens(OPEN), tokens(CITED))
    response = post(srv, tools=[{"type": "web_search"}])
    assert response["status"] == "completed", response.get("incomplete_details")
    types = [item["type"] for item in response["output"]]
    assert types == ["reasoning", "web_search_call", "web_search_call", "message"]
    search, opened, message = response["output"][1], response["output"][2], response["output"][3]
    assert search["action"] == {"type": "search", "query": "kiwi bird"}
    assert search["status"] == "completed" and search["id"].startswith("ws_")
    assert opened["action"] == {"type": "open_page", "url": "https://docs.example/kiwi.md"}
    text = message["content"][0]
    assert text["text"] == CITED_TEXT
    assert text["annotations"] == [
        {
            "type": "url_citation",
            "start_index": CITED_TEXT.index("(["),
            "end_index": len(CITED_TEXT) - 1,
            "url": "https://docs.example/kiwi.md",
            "title": "Kiwi",
        }
    ]
    # three generations: each continues the previous prompt with the model's call and the tool's reply
    first, second, third = (_decode(srv, i) for i in range(3))
    assert "namespace browser" in first and "## python" not in first
    assert second.startswith(first) and third.startswith(second)
    assert second[len(first) :].startswith(SEARCH.split("<|end|>")[0])
    assert "<|start|>browser.search to=assistant<|channel|>analysis<|message|>[0] kiwi bird" in second
    assert second.endswith("<|end|><|start|>assistant")
    assert (
        "<|start|>browser.open to=assistant<|channel|>analysis<|message|>[1] Kiwi (https://docs.example/kiwi.md)"
        in (third)
    )
    assert response["usage"]["output_tokens"] == sum(len(tokens(s)) for s in (SEARCH, OPEN, CITED))
    assert response["usage"]["input_tokens"] == sum(len(p) for p in srv.source.prompts)


def test_streamed_browser_events_and_cited_deltas(srv: Running) -> None:
    srv.source.queue(tokens(SEARCH), tokens(OPEN), tokens(CITED))
    events = stream(srv, tools=[{"type": "browser_search"}])
    kinds = [e["type"] for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    calls = [k for k in kinds if k.startswith("response.web_search_call.")]
    assert calls == ["response.web_search_call." + s for s in ("in_progress", "searching", "completed") * 2]
    assert kinds.index("response.web_search_call.completed") < kinds.index("response.output_text.delta")
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == CITED_TEXT and "【" not in deltas
    added = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert len(added) == 1 and added[0]["annotation"]["url"] == "https://docs.example/kiwi.md"
    assert kinds.index("response.output_text.annotation.added") < kinds.index("response.output_text.done")
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [d["type"] for d in done] == ["reasoning", "web_search_call", "web_search_call", "message"]
    assert done[1]["action"]["query"] == "kiwi bird"
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"] == done


def test_python_call_runs_and_becomes_a_code_interpreter_call(srv: Running) -> None:
    srv.source.queue(tokens(CODE), tokens(ANSWER42))
    response = post(srv, tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])
    assert response["status"] == "completed"
    call = response["output"][1]
    assert call["type"] == "code_interpreter_call" and call["status"] == "completed"
    assert call["code"] == "print(6 * 7)"
    assert call["outputs"] == [{"type": "logs", "logs": "ran 'print(6 * 7)'\n42\n"}]
    assert response["output"][2]["content"][0]["text"] == "It is 42."
    first, second = _decode(srv, 0), _decode(srv, 1)
    assert "## python" in first and "namespace browser" not in first
    assert "<|start|>python to=assistant<|channel|>analysis<|message|>ran 'print(6 * 7)'\n42\n<|end|>" in second


def test_streamed_python_events(srv: Running) -> None:
    srv.source.queue(tokens(CODE), tokens(ANSWER42))
    events = stream(srv, tools=[{"type": "code_interpreter"}])
    kinds = [e["type"] for e in events]
    ci = [k.removeprefix("response.") for k in kinds if k.startswith("response.code_interpreter_call")]
    assert ci[0] == "code_interpreter_call.in_progress"
    assert ci[-3:] == [
        "code_interpreter_call_code.done",
        "code_interpreter_call.interpreting",
        "code_interpreter_call.completed",
    ]
    code = "".join(e["delta"] for e in events if e["type"] == "response.code_interpreter_call_code.delta")
    assert code == "print(6 * 7)"
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][1]["outputs"][0]["logs"].endswith("42\n")


def test_functions_python_fallback_is_run_by_the_builtin(srv: Running) -> None:
    call = "<|channel|>commentary to=functions.python <|constrain|>json<|message|>1 + 1<|call|>"
    srv.source.queue(tokens(call), tokens(ANSWER42))
    response = post(srv, tools=[{"type": "code_interpreter"}])
    assert [i["type"] for i in response["output"]] == ["code_interpreter_call", "message"]
    assert response["status"] == "completed"
    assert "<|start|>functions.python to=assistant<|channel|>commentary<|message|>ran '1 + 1'" in _decode(srv, 1)


def test_a_user_function_named_python_is_not_taken_over(srv: Running) -> None:
    call = '<|channel|>commentary to=functions.python <|constrain|>json<|message|>{"x":1}<|call|>'
    srv.source.queue(tokens(call))
    fn = {"type": "function", "name": "python", "parameters": {"type": "object"}}
    response = post(srv, tools=[{"type": "code_interpreter"}, fn])
    assert [i["type"] for i in response["output"]] == ["function_call"]
    assert response["output"][0]["name"] == "python" and len(srv.source.prompts) == 1


def test_tool_rounds_are_bounded(srv: Running) -> None:
    srv.source.queue(*[tokens(SEARCH)] * 5)
    response = post(srv, tools=[{"type": "web_search"}])
    # OpenAI ignores calls past the limit: the response completes; gptoss says why in its extension field
    assert response["status"] == "completed" and response["incomplete_details"] is None
    stopped = response["gptoss"]["stopped"]
    assert stopped["reason"] == "max_tool_calls"
    assert "more than 3 built-in tool calls (the server's limit, --max-tool-rounds)" in stopped["message"]
    calls = [i for i in response["output"] if i["type"] == "web_search_call"]
    assert [c["status"] for c in calls] == ["completed"] * 3 + ["incomplete"]
    assert len(srv.source.prompts) == 4


def test_max_tool_calls_bounds_one_request(srv: Running) -> None:
    srv.source.queue(*[tokens(SEARCH)] * 5)
    response = srv.client().responses.create(
        model=MODEL, input="Tell me about kiwis.", tools=[{"type": "web_search"}], max_tool_calls=1
    )
    assert response.status == "completed"
    calls = [i for i in response.output if i.type == "web_search_call"]
    assert [c.status for c in calls] == ["completed", "incomplete"]
    extension = (response.model_extra or {})["gptoss"]
    assert "more than 1 built-in tool calls (the request's max_tool_calls)" in extension["stopped"]["message"]
    assert len(srv.source.prompts) == 2


def test_without_builtin_tools_the_prompt_has_no_tool_sections(srv: Running) -> None:
    post(srv)
    assert "namespace browser" not in _decode(srv, 0) and "## python" not in _decode(srv, 0)
    srv.source.queue(tokens(SEARCH))  # a browser call while the browser is off stays a (undeclared) call
    response = post(srv)
    assert response["output"][1]["type"] == "function_call"
    assert len(srv.source.prompts) == 2


def test_output_budget_spans_the_tool_loop(srv: Running) -> None:
    srv.source.queue(tokens(SEARCH), tokens(CITED))
    budget = len(tokens(SEARCH)) + 3
    response = post(srv, tools=[{"type": "web_search"}], max_output_tokens=budget)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"]["reason"] == "max_output_tokens"
    assert srv.source.params[-1].max_tokens == 3
    assert response["usage"]["output_tokens"] == budget


def test_follow_up_after_a_tool_loop(srv: Running) -> None:
    srv.source.queue(tokens(CODE), tokens(ANSWER42))
    first = post(srv, tools=[{"type": "code_interpreter"}])
    second = post(srv, input="Thanks!", previous_response_id=first["id"])
    assert second["status"] == "completed"
    follow_up = _decode(srv, 2)
    assert "<|start|>assistant<|channel|>final<|message|>It is 42.<|end|>" in follow_up
    assert "to=python" not in follow_up  # an analysis-channel call is chain of thought: dropped once answered


def test_follow_up_keeps_commentary_tool_calls_and_replies(srv: Running) -> None:
    call = "<|channel|>commentary to=functions.python <|constrain|>json<|message|>1 + 1<|call|>"
    srv.source.queue(tokens(call), tokens(ANSWER42))
    first = post(srv, tools=[{"type": "code_interpreter"}])
    post(srv, input="And again?", previous_response_id=first["id"], tools=[{"type": "code_interpreter"}])
    follow_up = _decode(srv, 2)
    assert "<|start|>assistant to=functions.python<|channel|>commentary<|message|>1 + 1<|call|>" in follow_up
    assert "<|start|>functions.python to=assistant<|channel|>commentary<|message|>ran '1 + 1'\n42\n<|end|>" in (
        follow_up
    )


class BrokenPython(PythonTool):
    def execute(self, code: str, cancel: threading.Event | None = None) -> str:
        raise RuntimeError("boom")


def test_a_tool_that_raises_fails_the_response_cleanly(tmp_path: Path) -> None:
    source = ScriptedSource()
    source.queue(tokens(CODE), tokens(ANSWER42))
    running = serve(tmp_path / "r.sqlite3", source, python=BrokenPython)
    try:
        with running.http() as http:
            body = {"model": MODEL, "input": "x", "tools": [{"type": "code_interpreter"}]}
            r = http.post("/v1/responses", json=body)
        response = r.json()
        assert r.status_code == 200 and response["status"] == "failed"
        assert response["error"]["message"] == "the built-in tool call failed: RuntimeError('boom')"
        assert response["output"][1]["status"] == "incomplete" and len(source.prompts) == 1
    finally:
        running.stop()


def test_unavailable_sandbox_is_a_clear_400(tmp_path: Path) -> None:
    running = serve(tmp_path / "r.sqlite3", python=EchoPython, python_unavailable="bubblewrap (`bwrap`) is missing.")
    try:
        with running.http() as http:
            body = {"model": MODEL, "input": "x", "tools": [{"type": "code_interpreter"}]}
            r = http.post("/v1/responses", json=body)
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["message"] == (
            "The code_interpreter tool cannot run on this server: bubblewrap (`bwrap`) is missing."
        )
        assert error["param"] == "tools"
        assert running.source.prompts == []
    finally:
        running.stop()


def test_openai_sdk_reads_tool_loop_responses(srv: Running) -> None:
    srv.source.queue(tokens(SEARCH), tokens(OPEN), tokens(CITED), tokens(CODE), tokens(ANSWER42))
    client = srv.client()
    r = client.responses.create(model=MODEL, input="kiwis?", tools=[{"type": "web_search"}])
    assert r.output_text == CITED_TEXT
    assert [item.type for item in r.output] == ["reasoning", "web_search_call", "web_search_call", "message"]
    interpreter = {"type": "code_interpreter", "container": {"type": "auto"}}
    streamed = list(client.responses.create(model=MODEL, input="6*7?", tools=[interpreter], stream=True))  # type: ignore[list-item]
    final = streamed[-1]
    assert final.type == "response.completed"  # type: ignore[union-attr]
    output = final.response.output  # type: ignore[union-attr]
    assert [item.type for item in output] == ["reasoning", "code_interpreter_call", "message"]


def test_a_failed_open_names_no_url_and_the_model_reads_the_error(srv: Running) -> None:
    bad_open = '<|channel|>analysis to=browser.open<|message|>{"id":99}<|call|>'
    srv.source.queue(tokens(SEARCH), tokens(bad_open), tokens(ANSWER42))
    response = post(srv, tools=[{"type": "web_search"}])
    assert response["status"] == "completed"
    assert response["output"][2]["action"] == {"type": "open_page"}
    reply = _decode(srv, 2).rsplit("<|start|>browser.open to=assistant", 1)[1]
    assert "99" in reply.split("<|end|>")[0]


def test_tool_choice_none_leaves_builtin_tools_out(srv: Running) -> None:
    response = post(srv, tools=[{"type": "web_search"}, {"type": "code_interpreter"}], tool_choice="none")
    assert response["status"] == "completed"
    first = _decode(srv, 0)
    assert "namespace browser" not in first and "## python" not in first


class SlowPython(PythonTool):
    def execute(self, code: str, cancel: threading.Event | None = None) -> str:
        time.sleep(0.5)
        return "done\n"


def test_a_client_that_leaves_during_a_tool_call_gets_no_further_generation(tmp_path: Path) -> None:
    source = ScriptedSource()
    source.queue(tokens(CODE), tokens(ANSWER42))
    running = serve(tmp_path / "r.sqlite3", source, python=SlowPython)
    try:
        body = {"model": MODEL, "input": "x", "tools": [{"type": "code_interpreter"}], "stream": True}
        with running.http() as http, http.stream("POST", "/v1/responses", json=body) as r:
            for line in r.iter_lines():
                if "response.code_interpreter_call.interpreting" in line:
                    break  # leave while the tool runs
        time.sleep(1.0)
        assert len(source.prompts) == 1
        with running.http() as http:  # the server is still fine
            assert http.post("/v1/responses", json={"model": MODEL, "input": "hi"}).status_code == 200
    finally:
        running.stop()
