"""Real servers for the server tests: uvicorn on 127.0.0.1 (a free port), in a thread, over a scripted source."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gptoss.engine import Engine, TokenSource
from gptoss.harmony import HarmonyEncoding
from gptoss.server import ServerConfig, create_app
from gptoss.server.edge import DrainingServer, HttpLimits, uvicorn_config
from gptoss.server.generation import harmony
from tests.engine.scripted import ScriptedSource

MODEL = "gpt-oss-test"
DATE = "2026-01-02"


def tokens(text: str) -> list[int]:
    """Harmony text (special tokens written out) -> token ids, as the model would produce them."""
    return harmony().encode(text, allowed_special="all")


def decode(ids: list[int]) -> str:
    return harmony().decode(ids)


ANSWER = (
    "<|channel|>analysis<|message|>Let me think.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>Hello there!<|return|>"
)


@dataclass
class Running:
    url: str
    source: Any  # a ScriptedSource, except in the tests that serve the tiny random model
    engine: Engine
    server: DrainingServer
    thread: threading.Thread
    api_key: str | None = None

    def client(self, **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=self.api_key or "none", max_retries=0, **kwargs)  # type: ignore[arg-type]

    def http(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def last_prompt(self) -> str:
        return decode(self.source.prompts[-1])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.engine.close()


def serve(
    store: Path,
    source: TokenSource | None = None,
    api_key: str | None = None,
    max_queue: int = 8,
    ready: bool = True,
    limits: HttpLimits | None = None,
    drain_s: float = 1.0,
    **options: Any,
) -> Running:
    """`options` are further ServerConfig fields (built-in tools, tool rounds); `drain_s` is the shutdown drain."""
    source = source or ScriptedSource(default=tokens(ANSWER))
    engine = Engine(source if ready else None, max_queue=max_queue)
    config = ServerConfig(
        model_name=MODEL, api_key=api_key, store_path=store, today=lambda: DATE, keepalive_seconds=5, **options
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    app = create_app(engine, config)
    state = app.state.gptoss
    http = uvicorn_config(
        app, "127.0.0.1", 0, limits or HttpLimits(), log_level="warning", on_reject=state.metrics.count_rejected
    )
    server = DrainingServer(http, drain_s, state.inflight.cancel_all)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.005)
    return Running(f"http://127.0.0.1:{sock.getsockname()[1]}", source, engine, server, thread, api_key)


@pytest.fixture()
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog that also sees uvicorn's own records (its loggers do not propagate to the root logger)."""
    uvicorn_log = logging.getLogger("uvicorn")
    uvicorn_log.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        uvicorn_log.removeHandler(caplog.handler)


@pytest.fixture(scope="session")
def encoding() -> HarmonyEncoding:
    return harmony()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = serve(tmp_path_factory.mktemp("store") / "responses.sqlite3")
    yield running
    running.stop()


@pytest.fixture()
def srv(shared: Running) -> Running:
    """The module's server with a clean script queue and record."""
    shared.source.scripts.clear()
    shared.source.prompts.clear()
    shared.source.params.clear()
    shared.source.default = tokens(ANSWER)
    shared.source.delay = 0.0
    return shared


@pytest.fixture(scope="session")
def model_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A server over the tiny random checkpoint: its output is noise, so whatever structure it has is enforced."""
    from gptoss.engine import ModelSource
    from gptoss.engine.loader import ensure_tiny_random
    from gptoss.runtime import load

    path, _ = ensure_tiny_random(tmp_path_factory.getbasetemp() / "xdg-data-home" / "gptoss" / "tiny-random")
    running = serve(tmp_path_factory.mktemp("model-srv") / "s.db", ModelSource(load(path)), max_queue=16)
    yield running
    running.stop()
