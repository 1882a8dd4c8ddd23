"""Built-in tools for a Responses request: which ones it asked for, checked against what the server offers.

`web_search` / `web_search_preview` / `browser_search` -> the browser (`--browser-dir`, `--browser-web`);
`code_interpreter` -> the sandboxed python tool (`--python`). Each response gets its own tools (the browser's page
stack and python's interpreter state live for one response), closed when the response ends.
"""

from __future__ import annotations

from collections.abc import Sequence

from gptoss.harmony import Message, Role
from gptoss.server.config import ServerConfig
from gptoss.server.conversation import ItemKind, OutputItem
from gptoss.server.errors import ApiError, bad_request
from gptoss.server.protocol import CodeInterpreterToolSpec, FunctionToolSpec, ResponsesTool, WebSearchToolSpec
from gptoss.tools import BuiltinTools

BROWSER_FUNCTIONS = ("browser.search", "browser.open", "browser.find")


def requested_tools(tools: Sequence[ResponsesTool], config: ServerConfig) -> BuiltinTools | None:
    """The request's built-in tools, or None when it asks for none; 400 when the server cannot provide one."""
    wants_browser = any(isinstance(t, WebSearchToolSpec) for t in tools)
    wants_python = any(isinstance(t, CodeInterpreterToolSpec) for t in tools)
    if not wants_browser and not wants_python:
        return None
    if wants_browser and config.browser is None:
        kind = next(t.type for t in tools if isinstance(t, WebSearchToolSpec))
        raise bad_request(
            f"The {kind} tool is not enabled on this server: start it with --browser-dir DIR (an offline local "
            "index; add --browser-web to also open web pages).",
            "tools",
            "tool_not_available",
        )
    if wants_python:
        if config.python is None:
            raise bad_request(
                "The code_interpreter tool is not enabled on this server: start it with --python.",
                "tools",
                "tool_not_available",
            )
        if config.python_unavailable is not None:
            raise bad_request(
                f"The code_interpreter tool cannot run on this server: {config.python_unavailable}",
                "tools",
                "tool_not_available",
            )
    functions = [t.name for t in tools if isinstance(t, FunctionToolSpec)]
    try:
        browser = config.browser() if wants_browser and config.browser is not None else None
        python = config.python() if wants_python and config.python is not None else None
    except Exception as e:  # e.g. the sandbox pool refused a session
        raise ApiError(503, f"A built-in tool could not be started: {e}", "tools", "tool_unavailable") from None
    return BuiltinTools(browser=browser, python=python, user_functions=functions)


def declared_names(tools: BuiltinTools | None) -> list[str]:
    """Recipients the output parser should accept as declared (no `undeclared_tool` problem)."""
    if tools is None:
        return []
    names = ["python"] if tools.python is not None else []
    return names + (list(BROWSER_FUNCTIONS) if tools.browser is not None else [])


def call_message(item: OutputItem) -> Message:
    """The harmony message of a function-call output item, as the model wrote it."""
    recipient = item.recipient or item.name or ""
    message = Message.from_role_and_content(Role.ASSISTANT, item.text)
    return message.with_channel(item.channel or "commentary").with_recipient(recipient)


def builtin_kind(tools: BuiltinTools | None, item: OutputItem) -> str | None:
    """The built-in tool ("browser" / "python") that will run this call, or None when it is not one."""
    if tools is None or item.kind is not ItemKind.FUNCTION_CALL:
        return None
    route = tools.route(call_message(item))
    return route.tool if route is not None else None
