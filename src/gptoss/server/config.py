"""ServerConfig: everything the HTTP layer needs to know that is not the engine."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

if TYPE_CHECKING:
    from gptoss.tools import BrowserTool, PythonTool

EFFORTS = ("low", "medium", "high")


def default_store_path() -> Path:
    return Path(platformdirs.user_data_dir("gptoss")) / "responses.sqlite3"


def utc_today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


@dataclass(frozen=True)
class ServerConfig:
    model_name: str = "gpt-oss"  # the id /v1/models lists and requests must name
    api_key: str | None = None  # None: no authentication
    default_effort: str = "medium"  # reasoning effort when a request gives none
    store_path: Path = field(default_factory=default_store_path)  # SQLite file for stored responses
    store_max_bytes: int = 512 << 20  # oldest stored responses are evicted beyond this
    max_body_bytes: int = 8 << 20  # larger request bodies get 413
    keepalive_seconds: float = 10.0  # SSE comment sent when a stream has been idle this long
    today: Callable[[], str] = utc_today  # the conversation start date in the system message
    # built-in tools (Responses `web_search` / `code_interpreter`): a fresh tool per response; None = not offered
    browser: Callable[[], BrowserTool] | None = None
    python: Callable[[], PythonTool] | None = None
    python_unavailable: str | None = None  # why the python sandbox cannot run here (requests for it get 400)
    max_tool_rounds: int = 16  # built-in tool calls one response may make before it ends incomplete
    # free reasoning a constrained (structured) turn may spend before the grammar closes it; see reasoning_budget
    max_reasoning_tokens: int = 2048

    def __post_init__(self) -> None:
        if self.default_effort not in EFFORTS:
            raise ValueError(
                f"default reasoning effort must be one of {', '.join(EFFORTS)}, got {self.default_effort!r}"
            )
        if self.max_tool_rounds < 0:
            raise ValueError("max_tool_rounds must be >= 0")
        if self.max_reasoning_tokens < 0:
            raise ValueError("max_reasoning_tokens must be >= 0")
        if self.store_max_bytes <= 0 or self.max_body_bytes <= 0 or self.keepalive_seconds <= 0:
            raise ValueError("store_max_bytes, max_body_bytes and keepalive_seconds must be positive")
