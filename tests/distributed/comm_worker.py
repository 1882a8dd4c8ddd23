"""One rank of the group test: broadcasts of small and large messages, and the collectives on both paths.

Usage: python -m tests.distributed.comm_worker SHM (1: shared memory where possible, 0: gloo only). Prints one JSON
line: whether this rank had the shared-memory group, and whether every check held.
"""

from __future__ import annotations

import json
import os
import sys

import torch

from gptoss.distributed import group


def main(shm: str) -> None:
    os.environ["GPTOSS_TP_SHM"] = shm
    comm = group.init(int(os.environ["WORLD_SIZE"]), timeout_s=30)
    big = {"rows": list(range(20000)), "t": torch.arange(5000)}  # pickles to far more than MESSAGE_BYTES
    checks = {
        "small": comm.broadcast({"x": 1} if comm.leader else None) == {"x": 1},
        "big": str(comm.broadcast(big if comm.leader else None)) == str(big),
    }
    mine = torch.full((3, 4), float(comm.rank + 1))
    total = float(sum(range(1, comm.world + 1)))
    checks["all_reduce"] = torch.equal(comm.all_reduce(mine), torch.full((3, 4), total))
    large = torch.ones(600, 1000)  # more than a shared-memory slot: gloo
    checks["all_reduce_large"] = torch.equal(comm.all_reduce(large), large * comm.world)
    cols = comm.all_gather_columns(torch.full((2, 3 if comm.rank else 4), float(comm.rank)), 4, 7)
    checks["all_gather"] = torch.equal(cols, torch.tensor([[0.0] * 4 + [1.0] * 3] * 2))
    print(json.dumps({"local": comm.local is not None, **checks}))
    group.close()


if __name__ == "__main__":
    main(sys.argv[1])
