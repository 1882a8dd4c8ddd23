"""Starting N ranks as torchrun would (RANK, WORLD_SIZE, MASTER_ADDR/PORT on 127.0.0.1), bounded by a timeout."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")]),
    )  # fmt: skip
    return env


def start(world: int, argv: list[str]) -> list[subprocess.Popen[str]]:
    """One process per rank running `python argv...`, stdout and stderr captured."""
    port = free_port()
    pipe = subprocess.PIPE
    return [
        subprocess.Popen(
            [sys.executable, *argv], env=rank_env(r, world, port), cwd=ROOT, text=True, stdout=pipe, stderr=pipe
        )
        for r in range(world)
    ]


def finish(procs: list[subprocess.Popen[str]], timeout: float) -> list[tuple[int, str]]:
    """(exit status, stderr) per rank; every rank is killed when the timeout passes."""
    results = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append((p.returncode, err))
    return results
