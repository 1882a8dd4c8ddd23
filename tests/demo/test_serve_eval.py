"""serve_eval's requests (what a client sends for each family) and its scoring of the server's answers, against a
scripted stand-in for the server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gptoss.demo import serve_eval
from gptoss.demo.data import Sample, generate
from gptoss.server.conversation import BuiltinCall, FunctionCall, FunctionOutput


def first_of(family: str) -> Sample:
    return next(s for s in generate(40, 5) if s.task.family == family)


class Scripted:
    """Answers each respond() with the next scripted response and records the requests."""

    def __init__(self, *responses: dict[str, Any]) -> None:
        self.responses: list[dict[str, Any]] = list(responses)
        self.requests: list[dict[str, Any]] = []

    def respond(self, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(body)
        return self.responses.pop(0)

    def tokens(self, text: str) -> int:
        return len(text.split())


def message(text: str) -> dict[str, Any]:
    return {"type": "message", "content": [{"type": "output_text", "text": text}]}


def reasoning(text: str) -> dict[str, Any]:
    return {"type": "reasoning", "content": [{"type": "reasoning_text", "text": text}]}


def test_requests_carry_each_familys_tools_format_and_effort() -> None:
    arith, func, extract = first_of("arithmetic"), first_of("function"), first_of("extraction")
    a = serve_eval.request(arith)
    assert {"type": "code_interpreter", "container": {"type": "auto"}} in a["tools"]
    assert a["reasoning"] == {"effort": arith.effort.value.lower()} and a["input"] == serve_eval.user_text(arith)
    f = serve_eval.request(func)
    assert [t["name"] for t in f["tools"]] == [t.name for t in func.task.tools]
    e = serve_eval.request(extract)
    assert e["instructions"] == extract.task.instructions and e["text"]["format"]["type"] == "json_schema"
    assert "tools" not in e


def test_arithmetic_is_correct_only_with_the_expression_and_the_value() -> None:
    s = first_of("arithmetic")
    code = next(i for i in s.task.turn if isinstance(i, BuiltinCall)).arguments
    value = str(s.task.expected["value"])
    ok = {"status": "completed", "output": [reasoning("a b c"), {"type": "code_interpreter_call", "code": code}]}
    ok["output"].append(message(f"It is {value}."))
    outcome = serve_eval.evaluate_sample(Scripted(ok), s)
    assert outcome.correct and outcome.completed and outcome.analysis_tokens == 3
    wrong = {**ok, "output": [{"type": "code_interpreter_call", "code": "print(1)"}, message(value)]}
    assert not serve_eval.evaluate_sample(Scripted(wrong), s).correct
    cut = {**ok, "status": "incomplete"}
    assert not serve_eval.evaluate_sample(Scripted(cut), s).completed


@pytest.mark.parametrize("args_ok", [True, False])
def test_function_calling_sends_the_result_back_and_checks_the_answer(args_ok: bool) -> None:
    s = first_of("function")
    call = next(i for i in s.task.turn if isinstance(i, FunctionCall))
    reply = next(i for i in s.task.turn if isinstance(i, FunctionOutput))
    args = call.arguments if args_ok else json.dumps({"x": 1})
    first = {"id": "resp_1", "status": "completed", "output": [{"type": "function_call", "name": call.name}]}
    first["output"][0].update(arguments=args, call_id="call_9")
    second = {"status": "completed", "output": [message(s.task.expected["answer"])]}
    client = Scripted(first, second)
    assert serve_eval.evaluate_sample(client, s).correct is args_ok
    follow = client.requests[1]
    assert follow["previous_response_id"] == "resp_1"
    assert follow["input"] == [{"type": "function_call_output", "call_id": "call_9", "output": reply.output}]


def test_extraction_counts_schema_valid_and_field_exact_apart() -> None:
    s = first_of("extraction")
    fields = s.task.expected["fields"]
    exact = serve_eval.evaluate_sample(Scripted({"status": "completed", "output": [message(json.dumps(fields))]}), s)
    assert exact.correct and exact.schema_valid
    other = {k: (v + 1 if isinstance(v, int) else v + "x") for k, v in fields.items()}
    valid = serve_eval.evaluate_sample(Scripted({"status": "completed", "output": [message(json.dumps(other))]}), s)
    assert not valid.correct and valid.schema_valid
    broken = serve_eval.evaluate_sample(Scripted({"status": "completed", "output": [message("{")]}), s)
    assert not broken.correct and broken.schema_valid is False


def test_summary_has_rates_and_medians_per_effort() -> None:
    o = serve_eval.Outcome
    table = serve_eval.summarize(
        [o("extraction", "low", True, True, 2, True), o("extraction", "high", True, False, 9, False)]
    )
    assert table["extraction"] == {"n": 2, "correct": 0.5, "completed": 1.0, "schema_valid": 0.5}
    assert table["median_analysis_low"] == 2 and table["median_analysis_medium"] is None


@pytest.mark.slow
def test_without_a_url_it_starts_a_server_and_stops_it(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.engine.checkpoints import tiny_random_home

    monkeypatch.setenv("XDG_DATA_HOME", str(tiny_random_home(tmp_path_factory)))
    serve_eval.main(["--model", "tiny-random", "--per-family", "1", "--workers", "5"])
    table = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert {f: table[f]["n"] for f in ("arithmetic", "function", "extraction", "chat", "echo")} == dict.fromkeys(
        ("arithmetic", "function", "extraction", "chat", "echo"), 1
    )


def test_a_url_and_a_model_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        serve_eval.main(["http://127.0.0.1:9", "--model", "tiny-random"])
    assert e.value.code == 2
    assert "--model is for the server this starts" in capsys.readouterr().err


def test_a_follow_up_sends_the_earlier_exchange_back_first() -> None:
    samples = [s for s in generate(80, 5, earlier=1.0) if s.earlier is not None and s.earlier.family == "function"]
    s = samples[0]
    said = serve_eval.request(s)["input"]
    assert said[0] == {"role": "user", "content": s.earlier.prompt[0].text}
    assert [i.get("type") for i in said[1:3]] == ["function_call", "function_call_output"]
    assert said[1]["name"] == s.earlier.expected["name"] and said[1]["call_id"] == said[2]["call_id"]
    assert said[3] == {"role": "assistant", "content": s.earlier.expected["answer"]}
    assert said[4] == {"role": "user", "content": serve_eval.user_text(s)}


def test_a_server_that_cannot_start_is_one_error_naming_its_exit_status(tmp_path: Path) -> None:
    refused = pytest.raises(RuntimeError, match="^gptoss serve exited with status 2 before it was ready$")
    with refused, serve_eval.started_server(str(tmp_path / "no-such-checkpoint")):
        pass
