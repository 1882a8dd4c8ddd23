"""Raw-socket helpers for tests that must control every byte a client sends (and see every byte it gets back)."""

from __future__ import annotations

import re
import select
import socket
import time

import httpx


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how many seconds that took; fails if the
    connection is still open after `timeout` seconds."""
    start = time.monotonic()
    data = b""
    while True:
        left = timeout - (time.monotonic() - start)
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            raise AssertionError(f"the server kept the connection open for {timeout} s; got {data[:200]!r}")
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return data, time.monotonic() - start
        data += chunk


def trickle(sock: socket.socket, payload: bytes, interval: float, size: int = 1) -> int:
    """Sends `payload` `size` bytes per `interval` seconds until it is all sent or the server answers or closes
    (a client that went on writing into a closed connection would get a reset instead of the answer); the number
    of bytes sent."""
    for i in range(0, len(payload), size):
        if select.select([sock], [], [], interval)[0]:
            return i
        try:
            sock.sendall(payload[i : i + size])
        except OSError:
            return i
    return len(payload)


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def statuses(data: bytes) -> list[int]:
    """The status of every response in a stream of HTTP/1.1 responses."""
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of the server's /metrics (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(name + (f"{{{wanted}}}" if labels else "")) + r" (\S+)$"
    found = re.search(pattern, httpx.get(url + "/metrics", timeout=10).text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def wait_metric(url: str, name: str, want: float, timeout: float = 2.0, **labels: str) -> float:
    deadline = time.monotonic() + timeout
    while (value := metric(url, name, **labels)) != want and time.monotonic() < deadline:
        time.sleep(0.02)
    return value
