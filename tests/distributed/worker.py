"""One rank of the parity run: loads each checkpoint sharded, rank 0 records logits and tokens, the rest follow.

Usage: python -m tests.distributed.worker OUT.pt CKPT...
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from gptoss import distributed
from gptoss.distributed.follower import Follower, stop_followers
from gptoss.distributed.serving import DistributedBatchedSource
from gptoss.distributed.transformer import DistributedTransformer
from tests.distributed.scenarios import record


def main(out: str, checkpoints: list[str]) -> None:
    comm = distributed.init(int(__import__("os").environ["WORLD_SIZE"]), timeout_s=60)
    results = {}
    for path in checkpoints:
        model = distributed.load(path, comm, dtype=torch.float32, context_length=128)
        if comm.leader:
            results[Path(path).name] = record(model, lambda m, c: DistributedBatchedSource(m, c))
            assert isinstance(model.transformer, DistributedTransformer)
            stop_followers(model.transformer)
        else:
            Follower(model).run()
    if comm.leader:
        torch.save(results, out)
    distributed.group.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
