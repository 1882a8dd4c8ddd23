"""Structured outputs are guaranteed: the tiny random model (whose free output is noise that never closes a message)
is the fuzzer. Every generated schema, through the real server over a socket, on both APIs, streaming or not,
with reasoning effort low and high, yields JSON that `jsonschema` validates; one invalid output fails the test."""

from __future__ import annotations

import itertools
import json
from typing import Any

import jsonschema
import openai
import pytest

from tests.server.conftest import MODEL, Running
from tests.server.schema_gen import random_schema

SCHEMAS = 304  # spread over the 8 (API, stream, effort) combinations: 38 each
COMBOS = list(itertools.product(["responses", "chat"], [False, True], ["low", "high"]))
# a small free-reasoning budget keeps the run short; the random model always uses all of it (it never closes)
EXTRA = {"max_reasoning_tokens": 6}


def responses_text(client: openai.OpenAI, schema: dict[str, Any], stream: bool, effort: str) -> tuple[str, str]:
    fmt = {"type": "json_schema", "name": "out", "schema": schema, "strict": True}
    kwargs: dict[str, Any] = dict(
        model=MODEL, input="Fill it in.", text={"format": fmt}, reasoning={"effort": effort}, max_output_tokens=400
    )
    if not stream:
        r = client.responses.create(**kwargs, extra_body=EXTRA)
        return r.output_text, f"{r.status} {r.incomplete_details} {r.model_extra}"
    events = list(client.responses.create(**kwargs, stream=True, extra_body=EXTRA))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    final = events[-1].response  # type: ignore[union-attr]
    assert text == final.output_text
    return text, final.status or ""


def chat_text(client: openai.OpenAI, schema: dict[str, Any], stream: bool, effort: str) -> tuple[str, str]:
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}
    messages = [{"role": "user", "content": "Fill it in."}]
    kwargs: dict[str, Any] = dict(
        model=MODEL, messages=messages, response_format=fmt, reasoning_effort=effort, max_completion_tokens=400
    )
    if not stream:
        r = client.chat.completions.create(**kwargs, extra_body=EXTRA)
        return r.choices[0].message.content or "", r.choices[0].finish_reason
    chunks = list(client.chat.completions.create(**kwargs, stream=True, extra_body=EXTRA))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return text, reasons[-1] if reasons else ""


@pytest.mark.slow
@pytest.mark.parametrize(("api", "stream", "effort"), COMBOS)
def test_random_schemas_always_give_valid_json(model_srv: Running, api: str, stream: bool, effort: str) -> None:
    client = model_srv.client(timeout=120)
    index = COMBOS.index((api, stream, effort))
    invalid = []
    for seed in range(index, SCHEMAS, len(COMBOS)):
        schema = random_schema(seed)
        text, status = (responses_text if api == "responses" else chat_text)(client, schema, stream, effort)
        try:
            jsonschema.validate(json.loads(text), schema)
        except (ValueError, jsonschema.ValidationError) as e:
            invalid.append((seed, status, text, str(e)[:200]))
        assert status.split()[0] in ("completed", "stop"), (seed, status, text)
    assert invalid == []


@pytest.mark.slow
def test_forced_calls_on_the_random_model(model_srv: Running) -> None:
    """tool_choice required / named / none with strict schemas, both APIs: the call (or its absence) is guaranteed."""
    client = model_srv.client(timeout=120)
    params = {
        "type": "object",
        "properties": {"city": {"enum": ["Oslo", "Rome"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city", "days"],
        "additionalProperties": False,
    }
    other = {"type": "object", "properties": {}, "additionalProperties": False}
    tools = [
        {"type": "function", "name": "forecast", "parameters": params, "strict": True},
        {"type": "function", "name": "noop", "parameters": other, "strict": True},
    ]
    for choice, names in [("required", {"forecast", "noop"}), ({"type": "function", "name": "forecast"}, {"forecast"})]:
        for seed in range(4):
            r = client.responses.create(
                model=MODEL,
                input=f"go {seed}",
                tools=tools,
                tool_choice=choice,
                extra_body=EXTRA,  # type: ignore[arg-type]
            )
            calls = [o for o in r.output if o.type == "function_call"]
            assert r.status == "completed" and len(calls) == 1 and calls[0].name in names
            jsonschema.validate(json.loads(calls[0].arguments), params if calls[0].name == "forecast" else other)
    chat_tools = [{"type": "function", "function": {k: v for k, v in t.items() if k != "type"}} for t in tools]
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "go"}],
        tools=chat_tools,
        tool_choice="required",  # type: ignore[arg-type]
        extra_body=EXTRA,
    )
    (call,) = r.choices[0].message.tool_calls or []
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name in {"forecast", "noop"}  # type: ignore[union-attr]
    assert r.choices[0].message.content in (None, "")  # nothing forced leaks into the content
    none = client.responses.create(
        model=MODEL,
        input="go",
        tools=tools,
        tool_choice="none",
        max_output_tokens=12,  # type: ignore[arg-type]
    )
    assert not [o for o in none.output if o.type == "function_call"]


def test_unsupported_keyword_in_a_strict_schema_is_a_400(model_srv: Running) -> None:
    client = model_srv.client()
    schema = {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}
    fmt = {"type": "json_schema", "name": "out", "schema": schema, "strict": True}
    with pytest.raises(openai.BadRequestError, match="'uniqueItems'") as e:
        client.responses.create(model=MODEL, input="x", text={"format": fmt})  # type: ignore[typeddict-item]
    assert e.value.body["param"] == "text.format.schema"  # type: ignore[index]
    tool = {"type": "function", "function": {"name": "f", "parameters": {"not": {"type": "string"}}, "strict": True}}
    with pytest.raises(openai.BadRequestError, match="'not' in strict mode") as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], tools=[tool])  # type: ignore[list-item]
    assert e.value.body["param"] == "tools[0].function.parameters"  # type: ignore[index]
    with pytest.raises(
        openai.BadRequestError, match="invalid JSON Schema: response format 'out'.type: unknown type 'strng'"
    ):
        bad = {"type": "json_schema", "name": "out", "schema": {"type": "strng"}}
        client.responses.create(model=MODEL, input="x", text={"format": bad})  # type: ignore[typeddict-item]
    with pytest.raises(openai.BadRequestError, match="max_reasoning_tokens"):
        client.responses.create(model=MODEL, input="x", extra_body={"max_reasoning_tokens": -1})
