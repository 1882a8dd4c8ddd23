"""llama.cpp's own server (`llama-server`) as bench_serving's peer: start it on a GGUF, complete token-id prompts.

The binary is built from the `vendor/llama.cpp` tree of the llama-cpp-python sdist that benchmarks/llamacpp.py
fetches (shared/reference/round2-facts.md has the offline cmake line); the GGUF is `llamacpp prepare`'s, converted
from the same random checkpoint gptoss loads. Each conversation is pinned to its own slot (`id_slot`) of `-np`
slots, prompt caching on; `/completion` takes token ids and its last stream chunk's `timings` say how many prompt
tokens were processed (`prompt_n`) and reused from the slot's cache (`cache_n`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx

from benchmarks.common import CACHE

SDIST_SERVER = CACHE / "llama-sdist/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server"


def default_server() -> Path:
    return Path(os.environ.get("LLAMA_SERVER", SDIST_SERVER))


def missing(binary: Path, gguf: Path) -> str | None:
    """Why llama-server cannot run here, or None."""
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return (
            f"llama-server not found at {binary}: build it from the llama-cpp-python sdist's vendor/llama.cpp "
            "(cmake ... -DLLAMA_BUILD_SERVER=ON; --llama-server or $LLAMA_SERVER names another), or pass --skip-llama"
        )
    if not gguf.is_file():
        return f"no GGUF at {gguf}: write it with `python -m benchmarks.llamacpp prepare --preset 20b`, or pass --gguf"
    return None


def start(
    binary: Path, gguf: Path, port: int, slots: int, ctx_per_slot: int, extra: list[str]
) -> subprocess.Popen[bytes]:
    """llama-server on 127.0.0.1:`port` with `slots` slots of `ctx_per_slot` positions each (not unified)."""
    cmd = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-np", str(slots)]
    cmd += ["-c", str(slots * ctx_per_slot), "-t", str(os.cpu_count() or 1), "--no-webui", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            raise SystemExit(f"llama-server exited ({proc.returncode}):\n{tail}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("llama-server did not become healthy in 15 minutes")


def completion_body(prompt: list[int], max_tokens: int, slot: int) -> dict[str, object]:
    return {
        "prompt": prompt,
        "n_predict": max_tokens,
        "temperature": 0.0,  # greedy, as gptoss's side
        "cache_prompt": True,
        "id_slot": slot,
        "stream": True,
        "return_tokens": True,
    }


def read_chunk(line: str) -> dict[str, object] | None:
    """One SSE `data:` line of /completion -> its JSON, or None for other lines."""
    if not line.startswith("data: "):
        return None
    chunk = json.loads(line[6:])
    if not isinstance(chunk, dict):
        raise ValueError(f"unexpected llama-server chunk: {line[:200]}")
    return chunk
