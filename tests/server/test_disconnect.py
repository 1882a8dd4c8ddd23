"""A client that disconnects mid-request frees the engine within 200 ms, on every endpoint, streaming or not."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from gptoss.engine import TokenEvent
from gptoss.sampling import SamplingParams, TokenConstraint
from tests.engine.scripted import ScriptedSource
from tests.server.conftest import MODEL, Running, serve, tokens

LONG = "<|channel|>final<|message|>" + "word " * 5000 + "<|return|>"


class SlowPrefill(ScriptedSource):
    """Ten seconds of prefill steps (no tokens) before the script: only a disconnect watcher can stop it early."""

    def _replay(
        self,
        script: list[int],
        params: SamplingParams,
        budget: int,
        top_logprobs: int | None,
        constraint: TokenConstraint | None,
    ) -> Iterator[TokenEvent | None]:
        for _ in range(2000):
            time.sleep(0.005)
            self.steps += 1
            yield None
        yield from super()._replay(script, params, budget, top_logprobs, constraint)


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = serve(tmp_path_factory.mktemp("d") / "s.db", ScriptedSource(default=tokens(LONG), delay=0.005))
    yield running
    running.stop()


def open_request(url: str, path: str, body: dict[str, object]) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(payload)}\r\n\r\n"
    sock.sendall(head.encode() + payload)
    return sock


def wait_running(running: Running, want: int, timeout: float) -> float:
    start = time.monotonic()
    while running.engine.stats().running != want:
        if time.monotonic() - start > timeout:
            raise AssertionError(f"engine running != {want} after {timeout}s")
        time.sleep(0.001)
    return time.monotonic() - start


def disconnect_and_time(running: Running, sock: socket.socket, read_first: bool) -> float:
    if read_first:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    wait_running(running, 1, 5)
    steps = running.source.steps
    sock.close()
    took = wait_running(running, 0, 2)
    time.sleep(0.05)
    assert running.source.steps - steps < 60  # it stopped, rather than running on in the background
    return took


BODIES: Sequence[tuple[str, dict[str, object]]] = [
    ("/v1/responses", {"model": MODEL, "input": "hi"}),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 3000}),
]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "wait"])
@pytest.mark.parametrize(("path", "body"), BODIES, ids=["responses", "chat", "completions"])
def test_disconnect_frees_the_engine_within_200ms(
    slow: Running, path: str, body: dict[str, object], stream: bool
) -> None:
    sock = open_request(slow.url, path, {**body, "stream": stream})
    took = disconnect_and_time(slow, sock, read_first=stream)
    assert took < 0.2, f"engine still busy {took * 1000:.0f} ms after the client left"


def test_disconnect_during_prefill_frees_the_engine(tmp_path: Path) -> None:
    running = serve(tmp_path / "s.db", SlowPrefill(default=tokens(LONG)))
    try:
        sock = open_request(running.url, "/v1/responses", {"model": MODEL, "input": "hi", "stream": True})
        took = disconnect_and_time(running, sock, read_first=True)  # response.created arrived; no token yet
        assert took < 0.2
    finally:
        running.stop()


def test_after_a_disconnect_the_next_request_is_served(slow: Running) -> None:
    slow.source.queue(tokens("<|channel|>final<|message|>ok<|return|>"))
    sock = open_request(
        slow.url, "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    )
    wait_running(slow, 0, 5)
    reply = b""
    while b"}" not in reply[-3:]:
        reply += sock.recv(65536)
    sock.close()
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["choices"][0]["message"]["content"] == "ok"
