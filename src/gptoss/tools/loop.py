"""The engine-side tool step, independent of any server: route a finished assistant message to a built-in tool,
run it, and hand back the harmony tool messages to append before generation continues.

    tools = BuiltinTools(browser=BrowserTool(LocalIndex("docs/")), python=PythonTool())
    system = tools.apply_to_system(SystemContent.new())     # adds the browser / python sections, nothing else
    ...                                                     # generate until <|call|>, parse the last message
    if tools.handles(message):
        step = await tools.run(message)                     # or tools.run_sync(message) outside an event loop
        conversation.messages += step.messages              # then render and generate again
    text, annotations = tools.cite(final_text)              # 【3†L4-L9】 -> ([site](url)) + url_citation

Routing (the reference server's rules): `browser.{search,open,find}` and `python` go to the enabled tool. With
`function_fallbacks` (on by default), `functions.python` and `functions.browser.{search,open,find}` are treated the
same way unless the request defines a function of that name (`user_functions`). The reply is authored by the
recipient the model used, addressed to the assistant, on the call's channel.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from gptoss.harmony import Message, SystemContent, ToolNamespaceConfig
from gptoss.tools.base import message_text, tool_message
from gptoss.tools.browser.tool import BrowserTool
from gptoss.tools.citations import UrlCitation, resolve_citations
from gptoss.tools.python import PythonTool, call_code

ToolKind = Literal["browser", "python"]


@dataclass(frozen=True)
class Route:
    tool: ToolKind
    function: str  # "search" | "open" | "find" for the browser, "python" for python


@dataclass
class ToolStep:
    """One executed tool call: the messages to append, and what the server needs for Responses output items."""

    tool: ToolKind
    function: str
    messages: list[Message]
    arguments: dict[str, Any] = field(default_factory=dict)  # browser: the parsed JSON; python: {"code": ...}
    output: str = ""  # the tool message text

    @property
    def action(self) -> dict[str, Any] | None:
        """A `web_search_call` action (`search` / `open_page` / `find`) for browser calls, else None."""
        if self.tool != "browser":
            return None
        if self.function == "search":
            return {"type": "search", "query": str(self.arguments.get("query", ""))}
        if self.function == "open":
            target = self.arguments.get("id")
            action: dict[str, Any] = {"type": "open_page"}
            if isinstance(target, str) and not target.strip().isdigit():
                action["url"] = target
            return action
        return {"type": "find", "pattern": str(self.arguments.get("pattern", ""))}


class BuiltinTools:
    """The built-in tools enabled for one conversation. Tools left as None are off (and not in the prompt)."""

    def __init__(
        self,
        *,
        browser: BrowserTool | None = None,
        python: PythonTool | None = None,
        function_fallbacks: bool = True,
        user_functions: Iterable[str] = (),
    ) -> None:
        self.browser, self.python = browser, python
        self.function_fallbacks = function_fallbacks
        self.user_functions = frozenset(user_functions)
        self._runner: asyncio.Runner | None = None  # run_sync's loop, kept so connections stay usable

    def namespaces(self) -> list[ToolNamespaceConfig]:
        """The system-message sections of the enabled tools (none when no tool is enabled)."""
        return [tool.namespace_config() for tool in (self.browser, self.python) if tool is not None]

    def apply_to_system(self, system: SystemContent) -> SystemContent:
        """Add the enabled tools' namespaces to a system message (returns the same object, like harmony)."""
        for namespace in self.namespaces():
            system.with_tools(namespace)
        return system

    def route(self, message: Message) -> Route | None:
        """Which built-in tool a message is for, or None (not a tool call, or a tool that is off)."""
        recipient = (message.recipient or "").strip()
        if recipient.startswith("functions."):
            name = recipient.removeprefix("functions.")
            if not self.function_fallbacks or name in self.user_functions:
                return None
            recipient = name
        if recipient == "python" and self.python is not None:
            return Route("python", "python")
        head, _, function = recipient.partition(".")
        if head == "browser" and self.browser is not None and function:
            return Route("browser", function)  # an unknown function gets an error message from the browser
        return None

    def handles(self, message: Message) -> bool:
        return self.route(message) is not None

    async def run(self, message: Message) -> ToolStep:
        """Execute the tool call in `message`. Raises ValueError if `handles(message)` is False."""
        route = self.route(message)
        if route is None:
            raise ValueError(f"not a call to an enabled built-in tool: recipient {message.recipient!r}")
        if route.tool == "python":
            assert self.python is not None
            messages = await self.python.process(message)
            arguments: dict[str, Any] = {"code": call_code(message)}
        else:
            assert self.browser is not None
            messages = await self.browser.process(message)
            arguments = _json_object(message_text(message))
        output = message_text(messages[0]) if messages else ""
        return ToolStep(route.tool, route.function, messages, arguments, output)

    def run_sync(self, message: Message) -> ToolStep:
        """`run` for callers without an event loop (the chat CLI); every call uses the same private loop. Ctrl-C
        cancels the call (stopping its code) and then raises KeyboardInterrupt."""
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(self.run(message))

    def unknown_tool_message(self, message: Message) -> Message:
        """A tool message telling the model its recipient is not an available tool (for the caller to append)."""
        recipient = message.recipient or "unknown"
        available = [n.name for n in self.namespaces()]
        hint = f"Available built-in tools: {', '.join(available)}." if available else "No built-in tools are enabled."
        return tool_message(recipient, f"Error: `{recipient}` is not an available tool. {hint}", message.channel)

    def cite(self, text: str) -> tuple[str, list[UrlCitation]]:
        """Citations in a final answer as markdown links plus url_citation annotations (no browser: unchanged)."""
        if self.browser is None:
            return text, []
        return resolve_citations(text, self.browser.citation_target)

    def reset_python(self) -> None:
        if self.python is not None:
            self.python.reset()

    def close(self) -> None:
        """Stop the python interpreter and close the browser's connections (outside an event loop). Tasks an
        interrupted `run_sync` left are cancelled and async generators finalised before the loop closes, so
        nothing is destroyed while pending."""
        runner, self._runner = self._runner or asyncio.Runner(), None
        with runner:
            runner.run(self.aclose())

    async def aclose(self) -> None:
        if self.python is not None:
            await asyncio.to_thread(self.python.close)
        if self.browser is not None:
            await self.browser.aclose()


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
