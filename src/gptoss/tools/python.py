"""The built-in `python` tool: a stateful interpreter per conversation, run in the bubblewrap sandbox.

gpt-oss was trained with a stateful Jupyter-like tool (harmony's python description says so), so one
`PythonTool` keeps one interpreter for its conversation: variables and imports persist between calls, the value
of a final expression is shown, `reset()` forgets everything. The reply is a tool message from `python` to the
assistant on the calling message's channel. Whatever happens to the code (exception, timeout, too much output,
a crash, sandbox unavailable) comes back as the text of that message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading

from gptoss.harmony import Message, ToolNamespaceConfig
from gptoss.harmony.builtin_tools import PYTHON_DESCRIPTION
from gptoss.tools.base import Tool, message_text, tool_message
from gptoss.tools.sandbox import (
    ExecResult,
    Outcome,
    PythonSession,
    SandboxBusy,
    SandboxPool,
    SandboxUnavailable,
    default_pool,
)

logger = logging.getLogger(__name__)
# The reference tool's reply when the code printed nothing (openai/gpt-oss python_docker/docker_tool.py).
EMPTY_OUTPUT_HINT = "[WARN] No output available. Use print() to output anything to stdout to receive the output"
SHOWN_OUTPUT_CHARS = 20_000  # what the model sees of a long output: the head and the tail
_TRAINED_TIMEOUT = "time out after 120.0 seconds"


def python_description(wall_seconds: float) -> str:
    """Harmony's python description (what the model was trained with), with the real time limit."""
    return PYTHON_DESCRIPTION.replace(_TRAINED_TIMEOUT, f"time out after {float(wall_seconds):.1f} seconds")


def call_code(message: Message) -> str:
    """The code of a call. `functions.python` calls sometimes wrap it as JSON ({"code": ...}); unwrap that."""
    text = message_text(message)
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            return text
        if isinstance(value, dict):
            for key in ("code", "script", "source", "input"):
                if isinstance(value.get(key), str):
                    return str(value[key])
    return text


def shorten(text: str, limit: int = SHOWN_OUTPUT_CHARS) -> str:
    """Keep the head and the tail of an over-long output (the tail holds the traceback)."""
    if len(text) <= limit:
        return text
    head, tail = text[: limit * 3 // 4], text[-(limit // 4) :]
    return f"{head}\n[... {len(text) - len(head) - len(tail)} characters of output omitted ...]\n{tail}"


def format_result(result: ExecResult, wall_seconds: float, output_bytes: int) -> str:
    """The tool message text for one executed call."""
    parts: list[str] = []
    if result.state_reset:
        parts.append(
            f"[NOTE] The python state was reset ({result.state_reset}); variables and imports from earlier "
            "calls are gone."
        )
    output = shorten(result.output)
    if result.outcome is Outcome.OK:
        parts.append(output if output else EMPTY_OUTPUT_HINT)
        return "\n".join(parts)
    if output:
        parts.append(output.rstrip("\n"))
    lost = "the python process was killed and its state (variables, imports) was reset."
    died = f"[ERROR] The python process ended ({result.detail}); its state was reset."
    if not result.ran:
        died = f"[ERROR] The python process ended ({result.detail}) before running the code; it was not run."
    reason = {
        Outcome.TIMEOUT: f"[ERROR] Execution timed out after {wall_seconds:g} seconds; {lost}",
        Outcome.OUTPUT_LIMIT: f"[ERROR] Output exceeded {output_bytes} bytes and was cut off; {lost}",
        Outcome.DIED: died,
        Outcome.LEFTOVERS: (
            f"[ERROR] The code or processes it started kept running after the call ended ({result.detail}); {lost}"
        ),
        Outcome.STREAMS: f"[ERROR] The code took over the interpreter's output: {result.detail}; {lost}",
        Outcome.CANCELLED: "[ERROR] The call was cancelled" + ("; the code was not run." if not result.ran else "."),
    }[result.outcome]
    parts.append(reason)
    return "\n".join(parts)


class PythonTool(Tool):
    """One conversation's stateful python. Share one `SandboxPool` across conversations (the default one)."""

    name = "python"

    def __init__(self, pool: SandboxPool | None = None, *, wall_seconds: float | None = None) -> None:
        self.pool = pool or default_pool()
        self.wall_seconds = self.pool.config.limits.wall_seconds if wall_seconds is None else wall_seconds
        self.session: PythonSession = self.pool.session()

    def unavailable_reason(self) -> str | None:
        """Why the sandbox cannot run here (None when it can). Callers may check this at start-up."""
        return self.pool.unavailable_reason()

    def namespace_config(self) -> ToolNamespaceConfig:
        return ToolNamespaceConfig("python", python_description(self.wall_seconds), [])

    def execute(self, code: str, cancel: threading.Event | None = None) -> str:
        """Run `code` (blocking) and return the text the model will read. `cancel`: see `PythonSession.run`."""
        limits = self.pool.config.limits
        if len(code.encode("utf-8", "replace")) > limits.code_bytes:
            return f"[ERROR] The code is larger than {limits.code_bytes} bytes; it was not run."
        if not code.strip():
            return "[ERROR] No code was sent: the message to python must contain the Python code to run."
        try:
            result = self.session.run(code, self.wall_seconds, cancel)
        except SandboxUnavailable as e:
            return f"[ERROR] The python tool is unavailable: {e} The code was not run."
        except SandboxBusy as e:
            return f"[ERROR] The python tool is busy: {e}. The code was not run."
        except Exception as e:  # e.g. the host is out of file descriptors: report it, keep the conversation going
            logger.exception("python tool failed")
            self.session.reset()
            return f"[ERROR] The python tool failed ({type(e).__name__}: {e}); its state was reset."
        return format_result(result, self.wall_seconds, limits.output_bytes)

    async def process(self, message: Message) -> list[Message]:
        code = call_code(message)
        cancel = threading.Event()
        task = asyncio.ensure_future(asyncio.to_thread(self.execute, code, cancel))
        try:
            text = await asyncio.shield(task)
        except asyncio.CancelledError:
            # The caller went away: stop the code instead of letting it run on; the next call says the state is gone.
            self.session.interrupt(cancel)
            raise
        return [tool_message(message.recipient or self.name, text, message.channel)]

    def reset(self) -> None:
        """Forget all state; the next call starts a fresh interpreter."""
        self.session.reset()

    def close(self) -> None:
        self.session.close()
