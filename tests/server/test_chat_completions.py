"""/v1/chat/completions through the official openai client over a real socket."""

from __future__ import annotations

import json

import openai
import pytest

from tests.server.conftest import ANSWER, MODEL, Running, tokens

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL = (
    "<|channel|>analysis<|message|>Need the weather.<|end|>"
    "<|start|>assistant<|channel|>commentary<|message|>Checking.<|end|>"
    "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
    '<|message|>{"city":"Paris"}<|call|>'
)
USER = [{"role": "user", "content": "hi"}]


def test_plain_completion_separates_reasoning_from_content(srv: Running) -> None:
    r = srv.client().chat.completions.create(model=MODEL, messages=USER)  # type: ignore[arg-type]
    (choice,) = r.choices
    assert choice.message.content == "Hello there!"
    assert choice.message.reasoning_content == "Let me think."  # type: ignore[attr-defined]
    assert choice.finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.completion_tokens, r.usage.prompt_tokens) == (len(tokens(ANSWER)), len(srv.source.prompts[-1]))
    assert r.usage.completion_tokens_details.reasoning_tokens == 8  # type: ignore[union-attr]
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl_")


def test_streaming_deltas_and_usage(srv: Running) -> None:
    chunks = list(
        srv.client().chat.completions.create(
            model=MODEL,
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert (reasoning, content) == ("Let me think.", "Hello there!")
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(tokens(ANSWER))


def test_tool_calls_round_trip(srv: Running) -> None:
    client = srv.client()
    srv.source.queue(tokens(CALL), tokens("<|channel|>final<|message|>Sunny.<|return|>"))
    r = client.chat.completions.create(model=MODEL, messages=USER, tools=[TOOL])  # type: ignore[arg-type, list-item]
    (choice,) = r.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking."  # the preamble
    (call,) = choice.message.tool_calls or []
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})  # type: ignore[union-attr]
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": choice.message.content,
            "reasoning_content": choice.message.reasoning_content,  # type: ignore[attr-defined]
            "tool_calls": [call.model_dump()],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=[TOOL])  # type: ignore[arg-type, list-item]
    assert second.choices[0].message.content == "Sunny."
    assert srv.last_prompt().endswith(
        "<|start|>user<|message|>hi<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>Need the weather.<|end|>"
        "<|start|>assistant<|channel|>commentary<|message|>Checking.<|end|>"
        "<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json"
        '<|message|>{"city":"Paris"}<|call|>'
        "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>sunny<|end|>"
        "<|start|>assistant"
    )


def test_streamed_tool_call_has_an_id_name_then_argument_deltas(srv: Running) -> None:
    srv.source.queue(tokens(CALL))
    chunks = list(srv.client().chat.completions.create(model=MODEL, messages=USER, tools=[TOOL], stream=True))  # type: ignore[arg-type, list-item]
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    first, rest = calls[0], calls[1:]
    assert first.id is not None and first.function is not None and first.function.name == "get_weather"
    assert len(rest) > 1 and all(tc.index == 0 and tc.id is None for tc in rest)
    assert "".join(tc.function.arguments or "" for tc in calls) == '{"city":"Paris"}'  # type: ignore[union-attr]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_previous_answers_drop_their_reasoning(srv: Running) -> None:
    messages = [
        *USER,
        {"role": "assistant", "content": "Hi!", "reasoning_content": "old thoughts"},
        {"role": "user", "content": "again"},
    ]
    srv.client().chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    assert "old thoughts" not in srv.last_prompt()
    assert (
        "<|start|>assistant<|channel|>final<|message|>Hi!<|end|><|start|>user<|message|>again<|end|>"
        in srv.last_prompt()
    )


def test_reasoning_effort_system_and_developer_messages(srv: Running) -> None:
    messages = [{"role": "system", "content": "Be terse."}, {"role": "developer", "content": "No emoji."}, *USER]
    srv.client().chat.completions.create(model=MODEL, messages=messages, reasoning_effort="low")  # type: ignore[arg-type]
    prompt = srv.last_prompt()
    assert "Reasoning: low" in prompt
    assert "<|start|>developer<|message|># Instructions\n\nBe terse.\n\nNo emoji.<|end|>" in prompt


def test_response_format_is_rendered_into_the_prompt(srv: Running) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "count", "schema": schema}}
    srv.source.queue(tokens('<|channel|>final<|message|>{"n":3}<|return|>'))
    r = srv.client().chat.completions.create(model=MODEL, messages=USER, response_format=fmt)  # type: ignore[arg-type]
    assert r.choices[0].message.content == '{"n":3}'
    srv.source.queue(tokens("<|channel|>final<|message|>Hello there<|return|>"))  # not JSON: the constraint refuses
    with pytest.raises(openai.InternalServerError, match="not allowed by the constraint"):
        srv.client().chat.completions.create(model=MODEL, messages=USER, response_format=fmt)  # type: ignore[arg-type]
    assert (
        '# Response Formats\n\n## count\n\n{"type":"object","properties":{"n":{"type":"integer"}}}' in srv.last_prompt()
    )


def test_stop_sequences_cut_the_content(srv: Running) -> None:
    client = srv.client()
    r = client.chat.completions.create(model=MODEL, messages=USER, stop=[" there"])  # type: ignore[arg-type]
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == ("Hello", "stop")
    chunks = list(client.chat.completions.create(model=MODEL, messages=USER, stop="lo t", stream=True))  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hel"


def test_sampling_fields_reach_the_engine(srv: Running) -> None:
    srv.client().chat.completions.create(
        model=MODEL,
        messages=USER,
        temperature=0,
        top_p=0.9,
        seed=42,
        max_completion_tokens=64,  # type: ignore[arg-type]
    )
    p = srv.source.params[-1]
    assert (p.temperature, p.top_p, p.seed, p.max_tokens) == (0.0, 0.9, 42, 64)
    srv.client().chat.completions.create(model=MODEL, messages=USER, max_tokens=7)  # type: ignore[arg-type]
    assert srv.source.params[-1].max_tokens == 7


def test_length_finish(srv: Running) -> None:
    client = srv.client()
    r = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=14)  # type: ignore[arg-type]
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == ("Hello", "length")
    cut = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=12)  # type: ignore[arg-type]
    choice = cut.choices[0].model_dump()  # cut inside the final message's header: nothing to report but the length
    assert (choice["message"]["content"], choice["finish_reason"], "gptoss" in cut.model_dump()) == (
        None,
        "length",
        False,
    )


def test_logprobs_cover_the_content_tokens(srv: Running) -> None:
    r = srv.client().chat.completions.create(model=MODEL, messages=USER, logprobs=True, top_logprobs=2)  # type: ignore[arg-type]
    entries = r.choices[0].logprobs.content  # type: ignore[union-attr]
    assert entries is not None
    assert "".join(e.token for e in entries) == "Hello there!"
    assert all(len(e.top_logprobs) == 2 and e.bytes == list(e.token.encode()) for e in entries)


def test_tool_choice_required_constrains_to_a_call(srv: Running) -> None:
    srv.source.queue(
        tokens('<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Oslo"}<|call|>')
    )
    r = srv.client().chat.completions.create(model=MODEL, messages=USER, tools=[TOOL], tool_choice="required")  # type: ignore[arg-type, list-item]
    assert srv.last_prompt().endswith("<|start|>assistant")
    assert srv.source.constraints[-1] is not None
    assert r.choices[0].message.tool_calls[0].function.arguments == '{"city":"Oslo"}'  # type: ignore[index, union-attr]


def test_named_tool_choice_and_none(srv: Running) -> None:
    client = srv.client()
    srv.source.queue(
        tokens('<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Rome"}<|call|>')
    )
    choice = {"type": "function", "function": {"name": "get_weather"}}
    r = client.chat.completions.create(model=MODEL, messages=USER, tools=[TOOL], tool_choice=choice)  # type: ignore[arg-type, list-item]
    assert r.choices[0].message.tool_calls[0].function.name == "get_weather"  # type: ignore[index, union-attr]
    client.chat.completions.create(model=MODEL, messages=USER, tools=[TOOL], tool_choice="none")  # type: ignore[arg-type, list-item]
    assert "get_weather" not in srv.last_prompt()


def test_malformed_output_is_reported_in_the_gptoss_extension(srv: Running) -> None:
    srv.source.queue(tokens("no header at all<|return|>"))
    raw = srv.client().chat.completions.with_raw_response.create(model=MODEL, messages=USER)  # type: ignore[arg-type]
    r = raw.parse()
    assert r.choices[0].message.content == "no header at all"
    assert r.choices[0].finish_reason == "stop"  # one of OpenAI's values; the repair is reported beside it
    assert [p["kind"] for p in (r.model_extra or {})["gptoss"]["repairs"]] == ["missing_message"]
    assert raw.headers["x-gptoss-repairs"] == "1"
    srv.source.queue(tokens("no header at all<|return|>"))
    stream = srv.client().chat.completions.create(model=MODEL, messages=USER, stream=True)  # type: ignore[arg-type]
    last = list(stream)[-1]
    assert last.choices[0].finish_reason == "stop"
    assert [p["kind"] for p in (last.model_extra or {})["gptoss"]["repairs"]] == ["missing_message"]


def test_unknown_tool_call_id_is_a_400(srv: Running) -> None:
    messages = [*USER, {"role": "tool", "tool_call_id": "nope", "content": "x"}]
    with pytest.raises(openai.BadRequestError, match="no function call with call_id 'nope' precedes its output"):
        srv.client().chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
