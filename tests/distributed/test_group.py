"""Joining the group: the errors for a launch that is not torchrun's or does not match --tp; the collectives."""

from __future__ import annotations

import json

import pytest

from gptoss.distributed import local
from gptoss.distributed.group import DistributedError, init
from tests.distributed import launch


def test_tp_without_torchrun_says_how_to_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(DistributedError, match=r"--tp 2 needs a torchrun launch .*torchrun --nproc-per-node 2"):
        init(2)


def test_tp_must_match_the_launched_world(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    with pytest.raises(DistributedError, match=r"--tp 2 but torchrun started 3 processes"):
        init(2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DistributedError, match="timeout must be positive"):
        init(2, timeout_s=0)


@pytest.mark.parametrize("shm", ["1", "0"])
def test_collectives_over_shared_memory_and_gloo(shm: str) -> None:
    procs = launch.start(2, ["-m", "tests.distributed.comm_worker", shm])
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    for report in outs:
        assert report.pop("local") == (shm == "1" and local.supported())
        assert all(report.values()), report
