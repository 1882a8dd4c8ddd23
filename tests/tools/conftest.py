"""Fixtures for the tools tests: a sandbox pool with short limits, loopback listeners, a folder of documents."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gptoss.tools.sandbox import SandboxConfig, SandboxLimits, SandboxPool, live_processes_of

# Short limits keep hostile snippets quick; uids 62000+ keep these tests apart from a server's default 61000+.
TEST_LIMITS = SandboxLimits(
    wall_seconds=2.0,
    cpu_seconds=2,
    total_cpu_seconds=60,
    memory_bytes=256 << 20,
    total_memory_bytes=384 << 20,
    file_size_bytes=4 << 20,
    processes=32,
    open_files=64,
    tmp_bytes=8 << 20,
    shm_bytes=1 << 20,
    output_bytes=256 << 10,
)
TEST_CONFIG = SandboxConfig(limits=TEST_LIMITS, uid_base=62000, uid_count=64, max_interpreters=8)


@pytest.fixture(scope="session")
def pool() -> Iterator[SandboxPool]:
    pool = SandboxPool(TEST_CONFIG)
    reason = pool.unavailable_reason()
    assert reason is None, f"the python sandbox must be available for these tests: {reason}"
    yield pool
    pool.close()


def wait_until_gone(uid: int, keep: set[int], seconds: float = 1.0) -> set[int]:
    """Poll until the live processes of `uid` are within `keep`; returns the extra pids still alive at the end."""
    deadline = time.monotonic() + seconds
    while True:
        extra = set(live_processes_of(uid)) - keep
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.02)


class Listener:
    """A TCP (or UDP) socket on loopback that counts what reaches it."""

    def __init__(self, family: socket.AddressFamily, kind: socket.SocketKind) -> None:
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        self.sock = socket.socket(family, kind)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.hits = 0
        self.sock.settimeout(0.1)
        if kind == socket.SOCK_STREAM:
            self.sock.listen(16)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(kind,), daemon=True)
        self._thread.start()

    def _serve(self, kind: socket.SocketKind) -> None:
        while not self._stop.is_set():
            try:
                if kind == socket.SOCK_STREAM:
                    conn, _ = self.sock.accept()
                    conn.close()
                else:
                    self.sock.recvfrom(65536)
            except (TimeoutError, OSError):
                continue
            self.hits += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def listeners() -> Iterator[dict[str, Listener]]:
    found = {
        "tcp4": Listener(socket.AF_INET, socket.SOCK_STREAM),
        "tcp6": Listener(socket.AF_INET6, socket.SOCK_STREAM),
        "udp4": Listener(socket.AF_INET, socket.SOCK_DGRAM),
    }
    yield found
    for listener in found.values():
        listener.close()


DOCS: dict[str, str] = {
    "guide.html": """<html><head><title>Sandbox guide</title><style>p {color: red}</style></head><body>
<h1>Sandboxing with bubblewrap</h1>
<p>Bubblewrap builds a sandbox from namespaces. Read <a href="notes/limits.md">the limits notes</a>,
the <a href="https://example.org/bwrap">upstream page</a> or <a href="#top">the top</a>.</p>
<script>document.write("never shown")</script>
<ul><li>1. unshare the network</li><li>- bind /usr read-only</li></ul>
<p>An <img alt="architecture diagram" src="arch.png"> image and one <img src="x.png"> without alt.</p>
<p>Chemistry: H<sub>2</sub>O, maths: x<sup>2</sup>, brackets: 【not a link】 and a dagger † here.</p>
</body></html>""",
    "notes/limits.md": """# Resource limits

RLIMIT_NPROC is ignored for processes whose real uid is 0, so every slot gets its own uid.
See [the guide](../guide.html) and ![a chart](chart.png).

CPU time is limited with RLIMIT_CPU; memory with RLIMIT_AS.
""",
    "cats.txt": "Cats and dogs\n\nCats sleep most of the day. Dogs like long walks in the park.\n",
    "long.txt": "Long document\n\n"
    + "\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog number {i}." for i in range(400))
    + "\nThe needle is here.\n",
    ".hidden.md": "# Hidden\n\nsecret hidden words\n",
    "image.png": "not a document",
}


@pytest.fixture(scope="session")
def docs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs")
    for name, text in DOCS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
