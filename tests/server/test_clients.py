"""Agent frameworks' structured-output and forced-tool flows, run unchanged against `gptoss serve` on the tiny random
model: each gets a valid object or a tool that actually ran (openai parse, openai-agents, langchain, pydantic-ai)."""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from tests.server.conftest import MODEL, Running, tokens

FAST = {"max_reasoning_tokens": 6}  # the random model never closes its reasoning: keep the budget short


class Pick(BaseModel):
    color: Literal["red", "green", "blue"]
    count: int = Field(ge=0, le=9)


def test_openai_parse_on_both_apis(model_srv: Running) -> None:
    client = model_srv.client(timeout=120)
    r = client.responses.parse(model=MODEL, input="pick", text_format=Pick, extra_body=FAST)
    assert isinstance(r.output_parsed, Pick)
    c = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "pick"}], response_format=Pick, extra_body=FAST
    )
    assert isinstance(c.choices[0].message.parsed, Pick)


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("choice", ["required", "get_weather"])
def test_openai_agents_forced_tool_runs(model_srv: Running, api: str, choice: str) -> None:
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner, function_tool
    from openai import AsyncOpenAI

    ran: list[str] = []

    @function_tool
    def get_weather(city: Literal["Oslo", "Rome"]) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"sunny in {city}"

    client = AsyncOpenAI(base_url=model_srv.url + "/v1", api_key="x", timeout=120)
    model = (OpenAIChatCompletionsModel if api == "chat" else OpenAIResponsesModel)(model=MODEL, openai_client=client)
    agent = Agent(
        name="w",
        model=model,
        tools=[get_weather],
        model_settings=ModelSettings(tool_choice=choice, extra_body=FAST),
        tool_use_behavior="stop_on_first_tool",
    )
    result = asyncio.run(Runner.run(agent, "weather?"))
    assert len(ran) == 1 and result.final_output == f"sunny in {ran[0]}"


def test_langchain_structured_output_and_required_tools(model_srv: Running) -> None:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=model_srv.url + "/v1", api_key="x", model=MODEL, timeout=120, extra_body=FAST)  # type: ignore[arg-type]
    # strict=True closes the objects (additionalProperties: false): a random model never ends an open one
    for method in ("json_schema", "function_calling"):
        out = llm.with_structured_output(Pick, method=method, strict=True).invoke("pick")  # type: ignore[arg-type]
        assert isinstance(out, Pick), method

    @tool
    def lookup(city: Literal["Oslo", "Rome"]) -> str:
        """Look a city up."""
        return city

    message = llm.bind_tools([lookup], tool_choice="required", strict=True).invoke("go")
    assert len(message.tool_calls) == 1 and message.tool_calls[0]["args"]["city"] in ("Oslo", "Rome")  # type: ignore[attr-defined]
    assert not message.invalid_tool_calls  # type: ignore[attr-defined]


def test_langchain_json_mode(srv: Running) -> None:
    """json_mode (json_object) on the scripted model: a random model never closes an unbounded object."""
    from langchain_openai import ChatOpenAI

    srv.source.queue(tokens('<|channel|>final<|message|>{"color":"red","count":2}<|return|>'))
    llm = ChatOpenAI(base_url=srv.url + "/v1", api_key="x", model=MODEL)  # type: ignore[arg-type]
    schema = {"title": "Pick", "type": "object", "properties": {"color": {"type": "string"}}}
    assert llm.with_structured_output(schema, method="json_mode").invoke("pick") == {"color": "red", "count": 2}


def test_pydantic_ai_output_type(model_srv: Running) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=model_srv.url + "/v1", api_key="x"))
    agent = Agent(model, output_type=Pick, model_settings={"extra_body": FAST})
    assert isinstance(agent.run_sync("pick").output, Pick)
