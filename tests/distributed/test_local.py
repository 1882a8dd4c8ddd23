"""The shared-memory collectives: sums and gathers in rank order, reuse of the alternating buffers, and failing
when a peer does not arrive or is gone. Threads stand in for the ranks (the futex works the same between them)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from gptoss.distributed import local
from gptoss.distributed.local import LocalGroup, PeerGone

pytestmark = pytest.mark.skipif(not local.supported(), reason="shared-memory collectives are x86-64 Linux only")


def groups(world: int, timeout_s: float = 10.0, pids: list[int] | None = None) -> list[LocalGroup]:
    path = local.create(world)
    try:
        return [LocalGroup.open(path, r, world, timeout_s, pids or [os.getpid()] * world) for r in range(world)]
    finally:
        os.unlink(path)  # the mappings outlive the name


def on_every_rank(gs: list[LocalGroup], fn: Callable[[LocalGroup], torch.Tensor]) -> list[torch.Tensor]:
    out: list[torch.Tensor | None] = [None] * len(gs)

    def run(r: int) -> None:
        out[r] = fn(gs[r])

    threads = [threading.Thread(target=run, args=(r,)) for r in range(len(gs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(o is not None for o in out), "a rank did not finish"
    return [o for o in out if o is not None]


def test_all_reduce_sums_in_rank_order_and_reuses_the_buffers() -> None:
    gs = groups(3)
    parts = [torch.randn(5, 7, generator=torch.Generator().manual_seed(r)) for r in range(3)]

    def many(g: LocalGroup) -> torch.Tensor:
        results = [g.all_reduce(parts[g.rank] * (i + 1)) for i in range(50)]  # 50 rounds over 2 buffers
        return torch.stack(results)

    got = on_every_rank(gs, many)
    want = torch.stack([(parts[0] + parts[1] + parts[2]) * (i + 1) for i in range(50)])
    for g in got:
        assert torch.equal(g, got[0])  # every rank holds the same bits
        torch.testing.assert_close(g, want)


def test_all_gather_stacks_every_rank_in_order() -> None:
    gs = groups(2)
    got = on_every_rank(gs, lambda g: g.all_gather(torch.full((2, 3), float(g.rank))))
    for g in got:
        assert torch.equal(g, torch.stack([torch.zeros(2, 3), torch.ones(2, 3)]))


def test_only_fp32_tensors_up_to_a_slot_fit() -> None:
    g = groups(2)[0]
    assert g.fits(torch.zeros(local.SLOT_FLOATS)) and not g.fits(torch.zeros(local.SLOT_FLOATS + 1))
    assert not g.fits(torch.zeros(4, dtype=torch.bfloat16))


def test_a_peer_that_never_arrives_times_out_naming_it() -> None:
    g = groups(3, timeout_s=0.3)[0]
    with pytest.raises(PeerGone, match=r"rank\(s\) 1, 2 did not arrive within 0.3 s"):
        g.all_reduce(torch.ones(4))


def test_a_peer_whose_process_is_gone_fails_at_once(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid no longer exists
    g = groups(2, timeout_s=60, pids=[os.getpid(), dead.pid])[0]
    with pytest.raises(PeerGone, match=r"rank\(s\) 1 exited"):
        g.all_reduce(torch.ones(4))
