"""The shipped demo model as a user meets it: `gptoss serve` without --model (and --python) says what it runs, a
short eval through the server meets the issue's thresholds, and the openai-agents SDK runs a function-tool agent
on it to completion with both the Chat Completions and the Responses model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from gptoss.demo import serve_eval, shipped
from gptoss.demo.compact import sha256
from tests.cli.test_serve import Process, start

pytestmark = pytest.mark.slow
PER_FAMILY = 30


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    home = tmp_path_factory.mktemp("demo-home")
    process = start(home, home / "store.sqlite3", "--python", model=None)
    yield process
    if process.proc.poll() is None:
        process.stop()


def test_the_package_holds_the_demo_model_and_its_sha() -> None:
    assert shipped.available()
    assert shipped.PACKAGE_FILE.stat().st_size <= 8 * 1024 * 1024
    assert shipped.manifest()["sha256"] == sha256(shipped.PACKAGE_FILE)


def test_serve_without_model_runs_the_demo_and_meets_the_thresholds(demo_server: Process) -> None:
    models = demo_server.client().models.list().data
    assert [m.id for m in models] == [shipped.demo_dir(shipped.manifest()["sha256"]).name]
    outcomes, table = serve_eval.run(demo_server.url, PER_FAMILY)
    assert all(o.completed for o in outcomes), [o for o in outcomes if not o.completed]
    assert table["arithmetic"]["correct"] >= 0.95, table
    assert table["function"]["correct"] >= 0.95, table
    assert table["extraction"]["schema_valid"] == 1.0, table
    assert table["extraction"]["correct"] >= 0.90, table
    low, medium, high = (table[f"median_analysis_{e}"] for e in ("low", "medium", "high"))
    assert low < medium < high, table


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_openai_agents_runs_a_function_tool_agent_to_completion(demo_server: Process, api: str) -> None:
    from agents import Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner, function_tool
    from openai import AsyncOpenAI

    ran: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        ran.append(city)
        return json.dumps({"city": city, "temperature_c": 21, "condition": "sunny"})

    client = AsyncOpenAI(base_url=demo_server.url + "/v1", api_key="x", timeout=120)
    name = demo_server.client().models.list().data[0].id
    model = (OpenAIChatCompletionsModel if api == "chat" else OpenAIResponsesModel)(model=name, openai_client=client)
    agent = Agent(name="weather", model=model, tools=[get_weather])
    result = asyncio.run(Runner.run(agent, "What's the weather in Lisbon?"))
    assert ran == ["Lisbon"]
    assert result.final_output == "In Lisbon it is 21 °C and sunny."


def test_the_startup_message_says_what_the_model_is(demo_server: Process) -> None:
    err = demo_server.stop()
    assert "No --model given: using the built-in demo model" in " ".join(err.split())
    assert "trained on synthetic tasks only" in " ".join(err.split())
