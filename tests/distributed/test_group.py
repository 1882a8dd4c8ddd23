"""Joining the group: the errors for a launch that is not torchrun's or does not match --tp."""

from __future__ import annotations

import pytest

from gptoss.distributed.group import DistributedError, init


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
