"""Helpers shared by the benchmark scripts: a cached random checkpoint of a real shape, RSS, timing."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from gptoss.cli.bench import peak_rss_gb, rss_gb

__all__ = ["CACHE", "cpu_model", "emit", "peak_rss_gb", "random_checkpoint", "rss_gb"]

CACHE = Path(os.environ.get("GPTOSS_BENCH_CACHE", Path(__file__).parent / ".cache"))


def random_checkpoint(preset: str, layout: str = "hf") -> Path:
    """Writes (once) a random checkpoint of `preset`'s exact shapes; later runs reuse it."""
    path = CACHE / f"random-{preset}-{layout}"
    done = path / ".complete"
    if not done.exists():
        if path.exists():
            subprocess.run(["rm", "-rf", str(path)], check=True)
        print(f"writing a random {preset} checkpoint to {path} (once) ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        # A subprocess, so the writer's memory does not count in this process's peak RSS.
        cmd = [sys.executable, "-m", "gptoss", "random-checkpoint", "--preset", preset, "--layout", layout]
        subprocess.run([*cmd, "--out", str(path)], check=True)
        done.write_text(f"{time.perf_counter() - t:.1f}s\n")
    return path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def emit(table: list[tuple[str, str]], result: dict[str, object]) -> None:
    """Prints a table for people, then the result as one JSON object on the last line."""
    width = max(len(k) for k, _ in table)
    for k, v in table:
        print(f"{k:<{width}}  {v}")
    print(json.dumps(result))
