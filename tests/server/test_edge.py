"""The HTTP edge over real sockets: slow heads and bodies are cut off at their deadline, the head size limit holds
however the bytes are split, conflicting framing closes the connection, and a client gone mid-upload is a
disconnect (499, logged once at debug), never a 500."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gptoss.server.edge import HttpLimits, head_size
from tests.server.conftest import MODEL, Running, serve
from tests.server.wire import connect, metric, read_until_closed, request_head, statuses, trickle, wait_metric

LIMITS = HttpLimits(header_timeout_s=1.0, body_timeout_s=1.0, max_header_bytes=4096)
SLACK = 0.5  # seconds a deadline may overrun on a shared, noisy machine
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = serve(tmp_path_factory.mktemp("edge") / "s.db", limits=LIMITS)
    yield running
    running.stop()


def error_of(data: bytes) -> dict[str, object]:
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    error = json.loads(body)["error"]
    assert isinstance(error, dict)
    return error


def rejected(running: Running, reason: str) -> float:
    return metric(running.url, "gptoss_rejected_connections_total", reason=reason)


def test_a_connection_that_sends_nothing_is_closed_at_the_head_deadline(edge: Running) -> None:
    before = rejected(edge, "head_timeout")
    data, took = read_until_closed(connect(edge.url), timeout=LIMITS.header_timeout_s + 3)
    assert LIMITS.header_timeout_s - 0.05 <= took < LIMITS.header_timeout_s + SLACK
    assert statuses(data) == [408]
    assert error_of(data)["message"] == "The request head did not arrive within 1 s."
    assert wait_metric(edge.url, "gptoss_rejected_connections_total", before + 1, reason="head_timeout") == before + 1


def test_slowloris_headers_are_cut_off_at_the_head_deadline(edge: Running) -> None:
    sock = connect(edge.url)
    start = time.monotonic()
    sent = trickle(sock, b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000, interval=0.05)
    data, _ = read_until_closed(sock, timeout=3)
    took = time.monotonic() - start
    assert 5 < sent < 1000  # it was still sending when the server gave up
    assert took < LIMITS.header_timeout_s + SLACK
    assert statuses(data) == [408] and error_of(data)["code"] == "request_timeout"


def test_slowloris_body_is_cut_off_at_the_body_deadline(edge: Running) -> None:
    before = metric(edge.url, "gptoss_requests_total", route="/v1/responses", status="499")
    sock = connect(edge.url)
    sock.sendall(request_head("POST", "/v1/responses", {**JSON, "Content-Length": "1000"}))
    start = time.monotonic()
    sent = trickle(sock, b" " * 1000, interval=0.05)
    data, _ = read_until_closed(sock, timeout=3)
    took = time.monotonic() - start
    assert 5 < sent < 1000 and took < LIMITS.body_timeout_s + SLACK
    assert statuses(data) == [408]
    assert error_of(data)["message"] == "The request body did not arrive within 1 s."
    # the route saw its client leave (nothing reached the engine), counted as such
    assert wait_metric(edge.url, "gptoss_requests_total", before + 1, route="/v1/responses", status="499") == before + 1
    assert edge.engine.stats().running == 0 and not edge.source.prompts


def big_head(size: int) -> bytes:
    head = request_head("GET", "/health", {"X-Pad": ""})
    return request_head("GET", "/health", {"X-Pad": "a" * (size - len(head))})


@pytest.mark.parametrize("chunk", [1 << 20, 1024, 97], ids=["one-write", "1KiB-writes", "97B-writes"])
def test_the_head_size_limit_does_not_depend_on_how_the_bytes_are_split(edge: Running, chunk: int) -> None:
    fits, over = big_head(LIMITS.max_header_bytes), big_head(LIMITS.max_header_bytes + 1)
    assert (len(fits), len(over)) == (4096, 4097)
    sock = connect(edge.url)
    assert trickle(sock, fits, interval=0.005, size=chunk) == len(fits)
    assert statuses(sock.recv(65536)) == [200]
    sock.close()
    sock = connect(edge.url)
    trickle(sock, over, interval=0.005, size=chunk)
    data, _ = read_until_closed(sock, timeout=3)
    assert statuses(data) == [431]
    assert error_of(data)["message"] == "The request line and headers are larger than 4096 bytes."


def test_head_size_counts_the_bytes_as_sent() -> None:
    import h11

    conn = h11.Connection(h11.SERVER)
    raw = big_head(3000)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Request) and head_size(event) == len(raw) == 3000


def test_transfer_encoding_with_content_length_closes_the_connection(edge: Running) -> None:
    """The chunked body ends at once; a request smuggled after it must not be answered."""
    before = rejected(edge, "conflicting_framing")
    sock = connect(edge.url)
    head = request_head("POST", "/v1/responses", {**JSON, "Transfer-Encoding": "chunked", "Content-Length": "5"})
    sock.sendall(head + b"0\r\n\r\n" + request_head("GET", "/health", {}))
    data, _ = read_until_closed(sock, timeout=3)
    assert statuses(data) == [400]
    assert error_of(data)["message"] == "A request may not have both Transfer-Encoding and Content-Length."
    assert rejected(edge, "conflicting_framing") == before + 1


def test_a_client_gone_mid_upload_is_a_disconnect_not_a_500(edge: Running, logs: pytest.LogCaptureFixture) -> None:
    logs.set_level(logging.DEBUG, logger="gptoss.server")
    route = {"route": "/v1/responses"}
    gone, errors = (metric(edge.url, "gptoss_requests_total", **route, status=s) for s in ("499", "500"))
    sock = connect(edge.url)
    sock.sendall(request_head("POST", "/v1/responses", {**JSON, "Content-Length": "100"}) + b'{"')
    time.sleep(0.1)  # the route is reading the body
    sock.close()
    assert wait_metric(edge.url, "gptoss_requests_total", gone + 1, **route, status="499") == gone + 1
    assert metric(edge.url, "gptoss_requests_total", **route, status="500") == errors
    left = [r for r in logs.records if "client left" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in left] == [
        (logging.DEBUG, "client left during POST /v1/responses before its request was read")
    ]
    assert not [r for r in logs.records if r.levelno >= logging.ERROR]


def test_chunked_garbage_is_a_400_that_closes(edge: Running, logs: pytest.LogCaptureFixture) -> None:
    sock = connect(edge.url)
    sock.sendall(request_head("POST", "/v1/responses", {**JSON, "Transfer-Encoding": "chunked"}) + b"zz\r\nxx")
    data, _ = read_until_closed(sock, timeout=3)
    assert statuses(data) == [400]
    assert str(error_of(data)["message"]).startswith("Malformed HTTP request: illegal chunk header")
    assert not [r for r in logs.records if r.levelno >= logging.ERROR]
    assert "Invalid HTTP request received." in [r.getMessage() for r in logs.records]  # uvicorn's records are seen


def test_keep_alive_requests_and_a_normal_upload_still_work(edge: Running) -> None:
    sock = connect(edge.url)
    body = json.dumps({"model": MODEL, "input": "hi", "store": False}).encode()
    post = request_head("POST", "/v1/responses", {**JSON, "Content-Length": str(len(body))}) + body
    sock.sendall(request_head("GET", "/health", {}))
    time.sleep(0.2)
    sock.sendall(post)
    time.sleep(0.5)
    sock.sendall(request_head("GET", "/health", {"Connection": "close"}))
    data, _ = read_until_closed(sock, timeout=5)
    assert statuses(data) == [200, 200, 200]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="HTTP timeouts and the header size limit must be positive"):
        HttpLimits(header_timeout_s=0)


def test_a_body_slower_than_its_deadline_fails_even_after_an_early_answer(tmp_path: Path) -> None:
    """A route may answer before reading the body (here: 415); the late body still cannot hold the connection."""
    running = serve(tmp_path / "s.db", limits=LIMITS)
    try:
        sock = connect(running.url)
        sock.sendall(request_head("POST", "/v1/responses", {"Content-Type": "text/plain", "Content-Length": "1000"}))
        start = time.monotonic()
        trickle(sock, b" " * 1000, interval=0.3)  # stops once the 415 is readable
        data, _ = read_until_closed(sock, timeout=3)
        assert statuses(data) == [415]  # and nothing after it: the answer was already given
        assert time.monotonic() - start < LIMITS.body_timeout_s + SLACK
    finally:
        running.stop()
