"""ServerConfig: everything the HTTP layer needs to know that is not the engine."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

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

    def __post_init__(self) -> None:
        if self.default_effort not in EFFORTS:
            raise ValueError(
                f"default reasoning effort must be one of {', '.join(EFFORTS)}, got {self.default_effort!r}"
            )
        if self.store_max_bytes <= 0 or self.max_body_bytes <= 0 or self.keepalive_seconds <= 0:
            raise ValueError("store_max_bytes, max_body_bytes and keepalive_seconds must be positive")
