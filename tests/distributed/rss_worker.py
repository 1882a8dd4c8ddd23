"""One rank of the memory test: load bf16 slices, run a forward, report how much of the model is resident.

Usage: python -m tests.distributed.rss_worker CKPT OUT_DIR. Writes OUT_DIR/rank<r>.json:
{"mapped": resident bytes of the checkpoint file's mappings (from /proc/self/smaps), "anon": growth of the
anonymous resident memory since before loading (the expert slices are copies), "blocks": [first, end) of the
32-unit blocks of every expert this rank holds}.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from gptoss import distributed
from gptoss.distributed.follower import Follower, stop_followers
from gptoss.distributed.transformer import DistributedTransformer


def mapped_rss(prefix: str) -> int:
    """Resident bytes of this process's mappings of files under `prefix`."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" in head[3]:  # a mapping's header line
                inside = len(head) >= 6 and head[5].startswith(prefix)
            elif inside and head[0] == "Rss:":
                total += int(head[1]) * 1024
    return total


def anon_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def main(ckpt: str, out: str) -> None:
    comm = distributed.init(int(os.environ["WORLD_SIZE"]), timeout_s=60)
    before = anon_rss()
    model = distributed.load(ckpt, comm, dtype=torch.bfloat16, context_length=64)
    t = model.transformer
    assert isinstance(t, DistributedTransformer)
    if comm.leader:
        model.logits(list(range(32)))  # routes to (nearly) every expert: all of this rank's get read
        stop_followers(t)
    else:
        Follower(model).run()
    mapped = mapped_rss(str(Path(ckpt).resolve()))
    report = {"mapped": mapped, "anon": anon_rss() - before, "blocks": list(t.plan.blocks)}
    (Path(out) / f"rank{comm.rank}.json").write_text(json.dumps(report))
    distributed.group.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
