"""`gptoss generate/bench/serve --tp N` over real processes: output, clean stops, and a rank that dies or hangs."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gptoss.cli.__main__ import main
from gptoss.engine.loader import TINY_RANDOM
from gptoss.random_checkpoint import write_random_checkpoint
from tests.distributed import launch

GENERATE = ["generate", "--tokens", "1,2,3,4", "--max-tokens", "8", "--temperature", "0", "--dtype", "fp32"]


def test_generate_tp_gives_the_single_process_tokens(tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*GENERATE, "--model", str(tiny_dir)]) == 0
    alone = capsys.readouterr().out.strip()
    procs = launch.start(3, ["-m", "gptoss", *GENERATE, "--model", str(tiny_dir), "--tp", "3"])
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs[0][1][-2000:]
    assert outs[0][0].strip() == alone and len(alone.split(",")) == 8
    assert outs[1][0] == outs[2][0] == ""  # followers print nothing


def test_bench_tp_reports_one_json_line(tiny_dir: Path) -> None:
    argv = ["-m", "gptoss", "bench", "--model", str(tiny_dir), "--prompt-tokens", "16", "--decode-tokens", "4"]
    procs = launch.start(2, [*argv, "--tp", "2", "--json"])
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:]
    result = json.loads(outs[0][0].strip().splitlines()[-1])
    assert result["tp"] == 2 and result["decode_tokens"] == 4 and result["prefill_tok_s"] > 0


def test_tp_without_torchrun_is_a_clear_error(tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*GENERATE, "--model", str(tiny_dir), "--tp", "2"]) == 2
    assert "--tp 2 needs a torchrun launch" in capsys.readouterr().err
    assert main([*GENERATE, "--model", str(tiny_dir), "--tp", "0"]) == 2
    assert "--tp must be >= 1, got 0" in capsys.readouterr().err
    assert main([*GENERATE, "--model", str(tiny_dir), "--dist-timeout", "0"]) == 2
    assert "--dist-timeout must be positive" in capsys.readouterr().err


@pytest.fixture(scope="module")
def harmony_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny shape with the full vocabulary, which the server's harmony rendering needs."""
    return write_random_checkpoint(tmp_path_factory.mktemp("tp") / "tiny", TINY_RANDOM, "hf", seed=0)


def request(port: int, timeout: float) -> tuple[int, dict[str, object]]:
    body = json.dumps({"prompt": "hello", "max_tokens": 4, "temperature": 0}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body, {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture()
def server(harmony_dir: Path, tmp_path: Path) -> Iterator[tuple[int, list[subprocess.Popen[str]]]]:
    port = launch.free_port()
    argv = ["-m", "gptoss", "serve", "--model", str(harmony_dir), "--tp", "2", "--port", str(port),
            "--dist-timeout", "8", "--store", str(tmp_path / "store.db"), "--kv-cache-gb", "0.01"]  # fmt: skip
    procs = launch.start(2, argv)
    try:
        deadline = time.monotonic() + 150
        while True:
            dead = [p for p in procs if p.poll() is not None]
            assert not dead, (
                f"rank {procs.index(dead[0])} exited {dead[0].returncode}: {dead[0].communicate()[1][-3000:]}"
            )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:  # not listening yet, or busy loading
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.3)
        yield port, procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()


def test_serve_tp_answers_and_stops_cleanly(server: tuple[int, list[subprocess.Popen[str]]]) -> None:
    port, procs = server
    status, body = request(port, timeout=60)
    assert status == 200 and body["usage"]["completion_tokens"] == 4  # type: ignore[index]
    procs[0].send_signal(signal.SIGTERM)  # rank 0 drains, then releases the follower
    assert procs[0].wait(timeout=60) == 0
    assert procs[1].wait(timeout=30) == 0


@pytest.mark.parametrize("how", ["killed", "hung"])
def test_a_failed_rank_gets_503_and_a_non_zero_exit(server: tuple[int, list[subprocess.Popen[str]]], how: str) -> None:
    port, procs = server
    procs[1].send_signal(signal.SIGKILL if how == "killed" else signal.SIGSTOP)
    start = time.monotonic()
    status, body = request(port, timeout=60)
    assert status == 503, body
    assert procs[0].wait(timeout=60) == 1
    assert time.monotonic() - start < 8 + 20  # within the collective timeout (plus the drain)
    err = procs[0].communicate()[1]
    assert "rank 0/2:" in err and "failed (another rank died or hung past the 8 s collective timeout)" in err
