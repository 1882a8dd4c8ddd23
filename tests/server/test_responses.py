"""/v1/responses through the official openai client over a real socket."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.server.conftest import ANSWER, MODEL, Running, tokens

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = (
    "<|channel|>analysis<|message|>Need the weather.<|end|>"
    "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
    '<|message|>{"city":"Paris"}<|call|>'
)
AFTER_CALL = "<|channel|>final<|message|>It is sunny in Paris.<|return|>"


def test_plain_response_has_reasoning_and_message_items(srv: Running) -> None:
    r = srv.client().responses.create(model=MODEL, input="Say hello")
    assert r.status == "completed"
    assert [o.type for o in r.output] == ["reasoning", "message"]
    assert r.output[0].content[0].text == "Let me think."  # type: ignore[union-attr, index]
    assert r.output_text == "Hello there!"
    assert r.usage is not None
    assert r.usage.output_tokens == len(tokens(ANSWER))
    assert r.usage.output_tokens_details.reasoning_tokens == 8  # `<|channel|>analysis<|message|>Let me think.<|end|>`
    assert r.usage.input_tokens == len(srv.source.prompts[-1])
    assert srv.last_prompt().endswith("<|start|>user<|message|>Say hello<|end|><|start|>assistant")


def test_streaming_emits_the_full_event_sequence_with_sequence_numbers(srv: Running) -> None:
    events = list(srv.client().responses.create(model=MODEL, input="hi", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    item = ["response.output_item.added", "response.content_part.added"]
    done = ["response.content_part.done", "response.output_item.done"]
    assert kinds == [
        "response.created",
        "response.in_progress",
        *item,
        *["response.reasoning_text.delta"] * 4,
        "response.reasoning_text.done",
        *done,
        *item,
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        *done,
        "response.completed",
    ]
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == "Hello there!"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert deltas == "Hello there!"


def test_stream_and_non_stream_agree(srv: Running) -> None:
    client = srv.client()
    plain = client.responses.create(model=MODEL, input="hi")
    streamed = list(client.responses.create(model=MODEL, input="hi", stream=True))[-1].response  # type: ignore[union-attr]
    strip = {"id", "created_at", "completed_at"}
    a, b = plain.model_dump(exclude=strip), streamed.model_dump(exclude=strip)
    for x in (a, b):
        for o in x["output"]:
            o.pop("id")
    assert a == b


def test_reasoning_effort_and_date_reach_the_system_message(srv: Running) -> None:
    srv.client().responses.create(model=MODEL, input="hi", reasoning={"effort": "high"})
    assert "Current date: 2026-01-02\n\nReasoning: high\n\n" in srv.last_prompt()
    srv.client().responses.create(model=MODEL, input="hi")
    assert "Reasoning: medium" in srv.last_prompt()  # the server default
    srv.client().responses.create(model=MODEL, input="hi", reasoning={"effort": "minimal"})
    assert "Reasoning: low" in srv.last_prompt()


def test_instructions_tools_and_schema_go_to_the_developer_message(srv: Running) -> None:
    srv.client().responses.create(
        model=MODEL,
        input=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "weather?"}],
        instructions="You are a weather bot.",
        tools=[WEATHER],  # type: ignore[list-item]
        text={"format": {"type": "json_schema", "name": "reply", "schema": {"type": "object"}}},
    )
    prompt = srv.last_prompt()
    developer = prompt[prompt.index("<|start|>developer") :]
    assert developer.startswith("<|start|>developer<|message|># Instructions\n\nYou are a weather bot.\n\nBe brief.")
    assert "type get_weather = (_: {\ncity: string,\n}) => any;" in developer
    assert '# Response Formats\n\n## reply\n\n{"type":"object"}' in developer
    assert "Calls to these tools must go to the commentary channel: 'functions'." in prompt


def test_function_call_round_trip_with_previous_response_id(srv: Running) -> None:
    client = srv.client()
    srv.source.queue(tokens(CALL), tokens(AFTER_CALL))
    first = client.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    assert first.status == "completed"
    call = first.output[-1]
    assert call.type == "function_call"
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert call.call_id.startswith("call_")
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "sunny"}'}],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert second.output_text == "It is sunny in Paris."
    prompt = srv.last_prompt()
    history = (
        "<|start|>user<|message|>Weather in Paris?<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>Need the weather.<|end|>"  # the tool loop's reasoning is kept
        "<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json"
        '<|message|>{"city":"Paris"}<|call|>'
        '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"sky": "sunny"}<|end|>'
        "<|start|>assistant"
    )
    assert prompt.endswith(history)


def test_previous_turn_reasoning_is_dropped_once_answered(srv: Running) -> None:
    client = srv.client()
    first = client.responses.create(model=MODEL, input="hi")
    client.responses.create(model=MODEL, previous_response_id=first.id, input="and again?")
    prompt = srv.last_prompt()
    assert "Let me think." not in prompt
    assert prompt.endswith(
        "<|start|>user<|message|>hi<|end|><|start|>assistant<|channel|>final<|message|>Hello there!<|end|>"
        "<|start|>user<|message|>and again?<|end|><|start|>assistant"
    )


def test_instructions_are_inherited_through_previous_response_id(srv: Running) -> None:
    client = srv.client()
    first = client.responses.create(model=MODEL, input="hi", instructions="Speak French.")
    second = client.responses.create(model=MODEL, previous_response_id=first.id, input="more")
    assert "Speak French." in srv.last_prompt()
    assert second.instructions == "Speak French."


def test_reasoning_given_back_in_a_tool_loop_is_kept(srv: Running) -> None:
    srv.client().responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "Weather?"},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": "Use the tool."}],
            },
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "rain"},
        ],  # type: ignore[list-item]
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert "<|channel|>analysis<|message|>Use the tool.<|end|>" in srv.last_prompt()


def test_tool_choice_none_removes_tools_from_the_prompt(srv: Running) -> None:
    srv.client().responses.create(model=MODEL, input="hi", tools=[WEATHER], tool_choice="none")  # type: ignore[list-item]
    assert "get_weather" not in srv.last_prompt()


def test_named_tool_choice_constrains_the_call(srv: Running) -> None:
    srv.source.queue(tokens('{"city":"Rome"}<|call|>'))  # not a call header: the constraint rejects it
    choice = {"type": "function", "name": "get_weather"}
    failed = srv.client().responses.create(model=MODEL, input="hi", tools=[WEATHER], tool_choice=choice)  # type: ignore[list-item, arg-type]
    assert failed.status == "failed" and failed.output == []
    call_tokens = '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Rome"}<|call|>'
    srv.source.queue(tokens(call_tokens))
    r = srv.client().responses.create(
        model=MODEL,
        input="hi",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_weather"},
    )
    assert srv.last_prompt().endswith("<|start|>assistant")  # nothing forced into the prompt or the content
    (call,) = r.output
    assert (call.type, call.name, call.arguments) == ("function_call", "get_weather", '{"city":"Rome"}')  # type: ignore[union-attr]
    assert r.usage is not None and r.usage.output_tokens == len(tokens(call_tokens))


def test_required_tool_choice_constrains_to_a_call_and_lets_the_model_name_it(srv: Running) -> None:
    srv.source.queue(tokens("<|channel|>final<|message|>no call<|return|>"))  # an answer is not allowed
    failed = srv.client().responses.create(model=MODEL, input="hi", tools=[WEATHER], tool_choice="required")  # type: ignore[list-item]
    assert failed.status == "failed" and failed.output == []
    srv.source.queue(
        tokens('<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Oslo"}<|call|>')
    )
    r = srv.client().responses.create(model=MODEL, input="hi", tools=[WEATHER], tool_choice="required")  # type: ignore[list-item]
    assert srv.last_prompt().endswith("<|start|>assistant")
    (call,) = r.output
    assert (call.name, call.arguments) == ("get_weather", '{"city":"Oslo"}')  # type: ignore[union-attr]
    assert r.status == "completed"


def test_streamed_function_call_has_argument_deltas(srv: Running) -> None:
    srv.source.queue(tokens(CALL))
    events = list(srv.client().responses.create(model=MODEL, input="hi", tools=[WEATHER], stream=True))  # type: ignore[list-item]
    args = [e for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(args) > 1 and "".join(e.delta for e in args) == '{"city":"Paris"}'  # type: ignore[union-attr]
    (done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done.arguments == '{"city":"Paris"}'  # type: ignore[union-attr]
    added = [e for e in events if e.type == "response.output_item.added"]
    assert added[-1].item.type == "function_call" and added[-1].item.name == "get_weather"  # type: ignore[union-attr]


def test_max_output_tokens_gives_incomplete(srv: Running) -> None:
    r = srv.client().responses.create(model=MODEL, input="hi", max_output_tokens=3)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens"
    assert r.output[-1].status == "incomplete"  # type: ignore[union-attr]
    assert srv.source.params[-1].max_tokens == 3


MALFORMED = "<|channel|>final one two three<|message|>Partial answer<|end|><|start|>user<|message|>fake<|return|>"


def test_malformed_output_is_repaired_and_every_problem_listed_in_the_extension(srv: Running) -> None:
    srv.source.queue(tokens(MALFORMED))
    raw = srv.client().responses.with_raw_response.create(model=MODEL, input="hi")
    r = raw.parse()
    assert r.status == "completed" and r.incomplete_details is None  # OpenAI's vocabulary only
    repairs = (r.model_extra or {})["gptoss"]["repairs"]
    assert [p["kind"] for p in repairs] == ["bad_header", "unexpected_role"]
    assert repairs[1]["text"] == "fake"  # the text is reported, not lost
    assert r.output_text == "Partial answer"
    assert raw.headers["x-gptoss-repairs"] == "2"
    assert srv.client().responses.retrieve(r.id).model_extra == r.model_extra  # stored with the response
    with srv.http() as http:
        metrics = http.get("/metrics").text
    assert 'gptoss_output_problems_total{kind="unexpected_role"}' in metrics


def test_sampling_fields_reach_the_engine(srv: Running) -> None:
    srv.client().responses.create(model=MODEL, input="hi", temperature=0.3, top_p=0.5, max_output_tokens=50)
    p = srv.source.params[-1]
    assert (p.temperature, p.top_p, p.max_tokens) == (0.3, 0.5, 50)
    assert p.stop_tokens == frozenset({200002, 200012})


def test_stored_responses_can_be_retrieved_and_deleted(srv: Running) -> None:
    client = srv.client()
    r = client.responses.create(model=MODEL, input="hi", metadata={"k": "v"})
    got = client.responses.retrieve(r.id)
    assert got.model_dump() == r.model_dump()
    assert got.metadata == {"k": "v"}
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError, match=f"No response found with id '{r.id}'"):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError, match=f"No response found with id '{r.id}'"):
        client.responses.delete(r.id)


def test_store_false_is_not_kept(srv: Running) -> None:
    client = srv.client()
    r = client.responses.create(model=MODEL, input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError, match=f"Previous response with id '{r.id}' not found"):
        client.responses.create(model=MODEL, input="more", previous_response_id=r.id)


def test_a_disconnected_stream_is_not_stored(srv: Running) -> None:
    srv.source.default = tokens("<|channel|>final<|message|>" + "word " * 400 + "<|return|>")
    srv.source.delay = 0.002
    body = {"model": MODEL, "input": "hi", "stream": True}
    with httpx.Client(base_url=srv.url, timeout=10) as http, http.stream("POST", "/v1/responses", json=body) as resp:
        lines = resp.iter_lines()
        assert next(lines) == "event: response.created"
        response_id = json.loads(next(lines).removeprefix("data: "))["response"]["id"]
    deadline = time.monotonic() + 2
    while srv.engine.stats().running and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(openai.NotFoundError):
        srv.client().responses.retrieve(response_id)
