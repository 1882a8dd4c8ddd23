"""OpenAI conformance through the official `openai` client: every documented request field is implemented or accepted,
usage carries the fields the SDK's types require, input_items lists and pages like OpenAI's, and Chat Completions
carries the chain of thought as `reasoning` (OpenAI's gpt-oss guidance) beside `reasoning_content`."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.server.conftest import MODEL, Running

USER: Any = [{"role": "user", "content": "hi"}]


# ---- Chat Completions ----


def test_chat_reasoning_is_on_the_message_under_both_names(srv: Running) -> None:
    message = srv.client().chat.completions.create(model=MODEL, messages=USER).choices[0].message
    extra = message.model_extra or {}
    assert extra["reasoning"] == extra["reasoning_content"] == "Let me think."
    assert message.content == "Hello there!"


def test_chat_reasoning_streams_under_both_names(srv: Running) -> None:
    chunks = list(srv.client().chat.completions.create(model=MODEL, messages=USER, stream=True))
    deltas = [c.choices[0].delta.model_extra or {} for c in chunks if c.choices]
    assert "".join(d.get("reasoning", "") for d in deltas) == "Let me think."
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Let me think."


def test_chat_reasoning_exclude_leaves_it_out(srv: Running) -> None:
    client = srv.client()
    body = {"reasoning": {"exclude": True, "effort": "high"}}
    r = client.chat.completions.create(model=MODEL, messages=USER, extra_body=body)
    extra = r.choices[0].message.model_extra or {}
    assert extra["reasoning"] is None and extra["reasoning_content"] is None
    assert r.choices[0].message.content == "Hello there!"
    assert r.usage is not None and r.usage.completion_tokens_details.reasoning_tokens == 8  # type: ignore[union-attr]
    assert "Reasoning: high" in srv.last_prompt()  # reasoning.effort is read too
    chunks = list(client.chat.completions.create(model=MODEL, messages=USER, stream=True, extra_body=body))
    assert all("reasoning" not in (c.choices[0].delta.model_extra or {}) for c in chunks if c.choices)


@pytest.mark.parametrize("key", ["reasoning", "reasoning_content"])
def test_chat_accepts_reasoning_on_input_under_both_names(srv: Running, key: str) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        *USER,
        {"role": "assistant", "content": None, key: "I should call f.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    srv.client().chat.completions.create(model=MODEL, messages=messages, tools=[tool])
    assert "<|channel|>analysis<|message|>I should call f.<|end|>" in srv.last_prompt()


def test_chat_logit_bias_reaches_the_sampler(srv: Running) -> None:
    srv.client().chat.completions.create(model=MODEL, messages=USER, logit_bias={"1234": -100, "99": 5.5})
    assert srv.source.params[-1].logit_bias == ((1234, -100.0), (99, 5.5))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"logit_bias": {"999999": 1}}, r"logit_bias: token 999999 is outside the vocabulary \(201088 tokens\)"),
        ({"logit_bias": {"12": 101}}, r"the bias of token 12 must be in \[-100, 100\], got 101"),
        ({"logit_bias": {"x": 1}}, "keys must be token ids"),
        ({"modalities": ["text", "audio"]}, "only text output is supported"),
        ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio output is not supported"),
        ({"web_search_options": {}}, "web search runs in /v1/responses"),
        ({"functions": [{"name": "f"}]}, "the deprecated `functions` is not supported; use `tools`"),
    ],
)
def test_chat_fields_it_cannot_honour_are_a_400_saying_why(srv: Running, fields: Any, message: str) -> None:
    with pytest.raises(openai.BadRequestError, match=message):
        srv.client().chat.completions.create(model=MODEL, messages=USER, extra_body=fields)


def test_chat_documented_fields_without_local_effect_are_accepted(srv: Running) -> None:
    r = srv.client().chat.completions.create(
        model=MODEL,
        messages=USER,
        prompt_cache_key="k",
        safety_identifier="user-1",
        verbosity="low",
        modalities=["text"],
        prediction={"type": "content", "content": "Hello"},
        prompt_cache_retention="24h",
        user="u",
        service_tier="auto",
        store=False,
        metadata={"a": "b"},
        parallel_tool_calls=True,
    )
    assert r.choices[0].message.content == "Hello there!"
    assert r.usage is not None and r.usage.prompt_tokens_details is not None
    assert (r.usage.prompt_tokens_details.cached_tokens, r.usage.prompt_tokens_details.cache_write_tokens) == (0, 0)


def test_completions_logit_bias_and_suffix(srv: Running) -> None:
    client = srv.client()
    client.completions.create(model=MODEL, prompt="<|start|>user<|message|>hi", max_tokens=2, logit_bias={"7": 3})
    assert srv.source.params[-1].logit_bias == ((7, 3.0),)
    with pytest.raises(openai.BadRequestError, match="suffix \\(fill-in-the-middle\\) is not supported"):
        client.completions.create(model=MODEL, prompt="def f(", suffix="return 1", max_tokens=2)


# ---- Responses ----


def test_the_model_may_be_named_with_its_hub_org(srv: Running) -> None:
    assert srv.client().responses.create(model="openai/" + MODEL, input="hi").model == MODEL
    with pytest.raises(openai.NotFoundError, match=f"This server serves '{MODEL}'"):
        srv.client().responses.create(model="openai/other", input="hi")


def test_responses_usage_has_every_field_the_sdk_types_require(srv: Running) -> None:
    from openai.types.responses import ResponseUsage

    r = srv.client().responses.create(model=MODEL, input="hi")
    assert r.usage is not None
    ResponseUsage.model_validate(r.usage.model_dump(), strict=True)  # raises on a missing required field
    assert r.usage.input_tokens_details.cache_write_tokens == 0


def test_responses_top_logprobs(srv: Running) -> None:
    client = srv.client()
    r = client.responses.create(model=MODEL, input="hi", top_logprobs=2)
    part = r.output[-1].content[0]  # type: ignore[union-attr]
    assert all(len(lp.top_logprobs) == 2 for lp in part.logprobs)  # type: ignore[union-attr]
    assert "".join(lp.token for lp in part.logprobs) == "Hello there!"  # type: ignore[union-attr]
    events = list(client.responses.create(model=MODEL, input="hi", top_logprobs=1, stream=True))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert all(len(e.logprobs) == 1 for e in deltas)  # type: ignore[union-attr]
    plain = client.responses.create(model=MODEL, input="hi", include=["message.output_text.logprobs"])
    assert plain.output[-1].content[0].logprobs[0].top_logprobs == []  # type: ignore[union-attr, index]
    assert client.responses.create(model=MODEL, input="hi").output[-1].content[0].logprobs == []  # type: ignore[union-attr]


def test_responses_documented_fields_without_local_effect_are_accepted(srv: Running) -> None:
    r = srv.client().responses.create(
        model=MODEL,
        input="hi",
        prompt_cache_key="k",
        safety_identifier="user-1",
        service_tier="auto",
        user="u",
        max_tool_calls=3,
        prompt_cache_retention="24h",
        text={"verbosity": "low"},
        extra_body={"context_management": [{"type": "compaction"}]},
    )
    assert r.status == "completed" and r.output_text == "Hello there!"
    assert (r.max_tool_calls, r.prompt_cache_key, r.safety_identifier) == (3, "k", "user-1")
    events = list(
        srv.client().responses.create(
            model=MODEL, input="hi", stream=True, stream_options={"include_obfuscation": False}
        )
    )
    assert events[-1].type == "response.completed"


def test_responses_prompt_templates_are_a_400_saying_why(srv: Running) -> None:
    with pytest.raises(openai.BadRequestError, match="stored prompt templates live on OpenAI's platform"):
        srv.client().responses.create(model=MODEL, prompt={"id": "pmpt_1"})


def test_conversation_chains_its_responses(srv: Running) -> None:
    client = srv.client()
    first = client.responses.create(model=MODEL, input="My name is Ada.", conversation="conv_test_1")
    assert first.conversation is not None and first.conversation.id == "conv_test_1"
    client.responses.create(model=MODEL, input="Who am I?", conversation={"id": "conv_test_1"})
    prompt = srv.last_prompt()
    assert (
        "My name is Ada." in prompt
        and "Hello there!" in prompt
        and prompt.endswith("Who am I?<|end|><|start|>assistant")
    )
    client.responses.create(model=MODEL, input="Unrelated.", conversation="conv_test_2")
    assert "Ada" not in srv.last_prompt()
    with pytest.raises(openai.BadRequestError, match="either previous_response_id or conversation, not both"):
        client.responses.create(model=MODEL, input="x", conversation="conv_test_1", previous_response_id=first.id)


# ---- GET /v1/responses/{id}/input_items ----


def test_input_items_list_and_page_like_openai(srv: Running) -> None:
    client = srv.client()
    items: Any = [
        {"role": "developer", "content": "Be brief."},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
        {"role": "user", "content": [{"type": "input_text", "text": "and?"}]},
    ]
    tool: Any = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    r = client.responses.create(model=MODEL, input=items, tools=[tool])
    listed = client.responses.input_items.list(r.id)
    assert [i.type for i in listed.data] == ["message", "function_call_output", "function_call", "message"]  # desc
    assert listed.data[0].content[0].text == "and?"  # type: ignore[union-attr]
    assert listed.data[1].output == "42"  # type: ignore[union-attr]
    asc = client.responses.input_items.list(r.id, order="asc", limit=2)
    assert [i.type for i in asc.data] == ["message", "function_call"] and asc.has_more
    assert asc.first_id == asc.data[0].id and asc.last_id == asc.data[1].id
    rest = client.responses.input_items.list(r.id, order="asc", limit=2, after=asc.last_id)
    assert [i.type for i in rest.data] == ["function_call_output", "message"] and not rest.has_more
    every = [i.id for i in client.responses.input_items.list(r.id, order="asc", limit=1)]  # the SDK pages itself
    assert every == [i.id for i in asc.data + rest.data]


def test_input_items_errors(srv: Running) -> None:
    client = srv.client()
    r = client.responses.create(model=MODEL, input="hi")
    with pytest.raises(openai.NotFoundError, match="No response found with id 'resp_nope'"):
        client.responses.input_items.list("resp_nope")
    with pytest.raises(openai.BadRequestError, match="limit must be between 1 and 100, got 101"):
        client.responses.input_items.list(r.id, limit=101)
    with pytest.raises(openai.BadRequestError, match="No input item with id 'msg_x'"):
        client.responses.input_items.list(r.id, after="msg_x")
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(r.id)
