"""The in-loop tool step: routing, system-message sections, tool messages in harmony form, a full turn through
the harmony parser and renderer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from gptoss.harmony import (
    Author,
    Conversation,
    HarmonyEncodingName,
    Message,
    Role,
    SystemContent,
    load_harmony_encoding,
)
from gptoss.tools import BuiltinTools, PythonTool, Route
from gptoss.tools.browser import BrowserTool, LocalIndex
from gptoss.tools.sandbox import SandboxConfig, SandboxPool

BASE = "https://docs.example.com/"


def call(recipient: str | None, text: str, channel: str = "commentary") -> Message:
    return (
        Message.from_author_and_content(Author.new(Role.ASSISTANT), text)
        .with_recipient(recipient)
        .with_channel(channel)
    )


@pytest.fixture
def browser(docs_dir: Path) -> BrowserTool:
    return BrowserTool(LocalIndex(docs_dir, base_url=BASE))


def test_system_sections_only_for_enabled_tools(browser: BrowserTool) -> None:
    default_python = PythonTool(SandboxPool(SandboxConfig()))  # nothing starts until code runs
    assert BuiltinTools().namespaces() == []
    assert BuiltinTools().apply_to_system(SystemContent.new()).tools is None
    both = BuiltinTools(browser=browser, python=default_python).apply_to_system(SystemContent.new())
    assert both.tools == SystemContent.new().with_browser_tool().with_python_tool().tools
    only_browser = BuiltinTools(browser=browser).apply_to_system(SystemContent.new())
    assert list(only_browser.tools or {}) == ["browser"]


def test_rendered_system_message_matches_harmony(browser: BrowserTool) -> None:
    encoding = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    tools = BuiltinTools(browser=browser, python=PythonTool(SandboxPool(SandboxConfig())))
    ours = SystemContent.new().with_conversation_start_date("2025-06-28")
    expected = SystemContent.new().with_conversation_start_date("2025-06-28").with_browser_tool().with_python_tool()
    render = encoding.render_conversation_for_completion
    mine = render(
        Conversation.from_messages([Message.from_role_and_content(Role.SYSTEM, tools.apply_to_system(ours))]),
        Role.ASSISTANT,
    )
    theirs = render(Conversation.from_messages([Message.from_role_and_content(Role.SYSTEM, expected)]), Role.ASSISTANT)
    assert mine == theirs
    text = encoding.decode(mine)
    assert "## browser\n\n// Tool for browsing." in text
    assert "## python\n\nUse this tool to execute Python code in your chain of thought." in text
    assert "time out after 120.0 seconds" in text


@pytest.mark.parametrize(
    ("recipient", "fallbacks", "user_functions", "route"),
    [
        ("browser.search", True, (), Route("browser", "search")),
        ("browser.open", False, (), Route("browser", "open")),
        ("browser.teleport", True, (), Route("browser", "teleport")),  # the browser answers with an error
        ("python", True, (), Route("python", "python")),
        ("functions.python", True, (), Route("python", "python")),
        ("functions.browser.find", True, (), Route("browser", "find")),
        ("functions.python", False, (), None),
        ("functions.python", True, ("python",), None),
        ("functions.browser.search", True, ("browser.search",), None),
        ("functions.get_weather", True, (), None),
        ("browser", True, (), None),
        ("assistant", True, (), None),
        (None, True, (), None),
    ],
)
def test_routing(
    browser: BrowserTool, recipient: str | None, fallbacks: bool, user_functions: tuple[str, ...], route: Route | None
) -> None:
    python = PythonTool(SandboxPool(SandboxConfig()))
    tools = BuiltinTools(browser=browser, python=python, function_fallbacks=fallbacks, user_functions=user_functions)
    assert tools.route(call(recipient, "{}")) == route
    assert tools.handles(call(recipient, "{}")) is (route is not None)


def test_disabled_tools_are_not_routed(browser: BrowserTool) -> None:
    assert BuiltinTools(browser=browser).route(call("python", "print(1)")) is None
    assert BuiltinTools(python=PythonTool(SandboxPool(SandboxConfig()))).route(call("browser.search", "{}")) is None
    with pytest.raises(ValueError, match="not a call to an enabled built-in tool"):
        asyncio.run(BuiltinTools().run(call("python", "print(1)")))
    message = BuiltinTools(browser=browser).unknown_tool_message(call("python", "print(1)", "analysis"))
    assert message.author == Author(Role.TOOL, "python") and message.channel == "analysis"
    assert message.content[0].text == "Error: `python` is not an available tool. Available built-in tools: browser."  # type: ignore[union-attr]


def test_browser_steps(browser: BrowserTool) -> None:
    tools = BuiltinTools(browser=browser)
    step = tools.run_sync(call("browser.search", '{"query": "RLIMIT_NPROC"}', "analysis"))
    [message] = step.messages
    assert message.author == Author(Role.TOOL, "browser.search")
    assert message.recipient == "assistant" and message.channel == "analysis"
    assert step.output.startswith("[0] RLIMIT_NPROC\n") and step.output == message.content[0].text  # type: ignore[union-attr]
    assert (step.tool, step.function, step.action) == ("browser", "search", {"type": "search", "query": "RLIMIT_NPROC"})
    step = tools.run_sync(call("browser.open", '{"id": 0}'))
    assert step.action == {"type": "open_page"} and step.output.startswith("[1] Resource limits")
    step = tools.run_sync(call("browser.open", json.dumps({"id": BASE + "cats.txt"})))
    assert step.action == {"type": "open_page", "url": BASE + "cats.txt"}
    step = tools.run_sync(call("functions.browser.find", '{"pattern": "dogs"}'))
    assert step.action == {"type": "find", "pattern": "dogs"}
    assert step.messages[0].author.name == "functions.browser.find"
    step = tools.run_sync(call("browser.search", "not json"))
    assert step.output.startswith("Invalid arguments for browser.search: not valid JSON")
    assert step.arguments == {}
    text, notes = tools.cite("Cats nap【2†L2】.")
    assert text == f"Cats nap ([docs.example.com]({BASE}cats.txt))." and notes[0].title == "Cats and dogs"
    tools.close()


def test_python_step_and_reset(pool: SandboxPool) -> None:
    tools = BuiltinTools(python=PythonTool(pool))
    try:
        step = tools.run_sync(call("python", "x = 6\nx * 7", "analysis"))
        assert (step.tool, step.function, step.action) == ("python", "python", None)
        assert step.arguments == {"code": "x = 6\nx * 7"} and step.output == "42\n"
        assert step.messages[0].author == Author(Role.TOOL, "python") and step.messages[0].channel == "analysis"
        assert tools.run_sync(call("python", "print(x)")).output == "6\n"
        tools.reset_python()
        assert "NameError" in tools.run_sync(call("python", "print(x)")).output
        assert tools.cite("no browser【0†L1】") == ("no browser【0†L1】", [])
    finally:
        tools.close()


def test_a_full_turn_through_harmony(browser: BrowserTool, pool: SandboxPool) -> None:
    """Parse a sampled tool call, run it, append the reply, render the next prompt; then python the same way."""
    encoding = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    tools = BuiltinTools(browser=browser, python=PythonTool(pool))
    system = tools.apply_to_system(SystemContent.new().with_conversation_start_date("2025-06-28"))
    conversation = Conversation.from_messages(
        [Message.from_role_and_content(Role.SYSTEM, system), Message.from_role_and_content(Role.USER, "Cats?")]
    )
    try:
        for sampled in (
            '<|channel|>analysis to=browser.search<|message|>{"query": "cats"}<|call|>',
            "<|channel|>analysis to=python code<|message|>print(sum(range(10)))<|call|>",
        ):
            tokens = encoding.encode(sampled, allowed_special="all")
            [message] = encoding.parse_messages_from_completion_tokens(tokens, Role.ASSISTANT)
            assert tools.handles(message)
            step = tools.run_sync(message)
            conversation.messages += [message, *step.messages]
        prompt = encoding.decode(encoding.render_conversation_for_completion(conversation, Role.ASSISTANT))
        assert (
            '<|start|>assistant to=browser.search<|channel|>analysis<|message|>{"query": "cats"}<|call|>'
            "<|start|>browser.search to=assistant<|channel|>analysis<|message|>[0] cats\n**viewing lines"
        ) in prompt
        assert prompt.endswith(
            "<|start|>assistant to=python<|channel|>analysis code<|message|>print(sum(range(10)))<|call|>"
            "<|start|>python to=assistant<|channel|>analysis<|message|>45\n<|end|><|start|>assistant"
        )
    finally:
        tools.close()


def test_ctrl_c_during_run_sync_cancels_the_call_and_the_next_call_says_so(pool: SandboxPool) -> None:
    tools = BuiltinTools(python=PythonTool(pool))
    # Python's own handler, even where the runner inherited SIGINT ignored (a background job of a shell)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert tools.run_sync(call("python", "x = 1")).output.startswith("[WARN] No output available")
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            tools.run_sync(call("python", "import time\ntime.sleep(30)"))
        assert time.monotonic() - start < 1.5  # the code was stopped, not waited for
        out = tools.run_sync(call("python", "print(x)")).output
    finally:
        signal.signal(signal.SIGINT, previous)
        tools.close()
    assert out.startswith("[NOTE] The python state was reset (the previous call was cancelled before it finished)")
    assert "NameError" in out
