"""The process group: torchrun's environment in, collectives out (gloo, on CPU).

Every collective is bounded by the group's timeout, so a rank that dies or hangs makes the others fail with a
clear error instead of waiting forever.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from gptoss.errors import GptossError

DEFAULT_TIMEOUT_S = 60.0
LOAD_TIMEOUT_S = 1800.0  # how long ranks wait for each other to finish loading (a big checkpoint from a cold disk)
ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(GptossError):
    """A launch that cannot form the group asked for (not torchrun, a --tp that does not match, a bad timeout)."""


class CollectiveError(RuntimeError):
    """A collective failed: another rank died or hung past the timeout. This process cannot go on."""


@dataclass(frozen=True)
class Comm:
    rank: int
    world: int
    timeout_s: float
    load_group: dist.ProcessGroup | None = None  # the same ranks with LOAD_TIMEOUT_S: only for loaded()

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over ranks in fp32 (bf16 partial sums would lose bits), returned in t's dtype."""
        acc = t.float().contiguous()
        self._run("all_reduce", lambda: dist.all_reduce(acc))
        return acc.to(t.dtype)

    def all_gather_columns(self, t: torch.Tensor, chunk: int, total: int) -> torch.Tensor:
        """Each rank's (T, <= chunk) columns -> (T, total), ranks in order (padded to equal sizes for gloo)."""
        padded = torch.zeros(t.shape[0], chunk, dtype=t.dtype)
        padded[:, : t.shape[1]] = t
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        self._run("all_gather", lambda: dist.all_gather(parts, padded))
        return torch.cat(parts, dim=1)[:, :total]

    def broadcast(self, obj: object) -> object:
        """rank 0's obj on every rank (others pass None)."""
        box = [obj]
        self._run("broadcast", lambda: dist.broadcast_object_list(box, src=0))
        return box[0]

    def loaded(self) -> None:
        """Waits until every rank has loaded its slices (bounded by LOAD_TIMEOUT_S, not the collective timeout):
        the ranks then start together, so the first step's collectives wait for no one's loading."""
        self._run("barrier after loading", lambda: dist.barrier(group=self.load_group))

    def _run(self, what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except (RuntimeError, ConnectionError) as e:  # DistBackendError is a RuntimeError
            raise CollectiveError(
                f"rank {self.rank}/{self.world}: {what} failed (another rank died or hung past the "
                f"{self.timeout_s:g} s collective timeout): {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from e


def launched_world() -> int:
    """WORLD_SIZE as torchrun sets it (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(world: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> Comm:
    """Joins the group torchrun describes; checks that it has `world` ranks (the --tp the user asked for)."""
    missing = [k for k in ENV if k not in os.environ]
    if missing:
        raise DistributedError(
            f"--tp {world} needs a torchrun launch (missing {', '.join(missing)}): "
            f"torchrun --nproc-per-node {world} -m gptoss ..."
        )
    launched = launched_world()
    if launched != world:
        raise DistributedError(f"--tp {world} but torchrun started {launched} processes (WORLD_SIZE={launched})")
    if timeout_s <= 0:
        raise DistributedError(f"the collective timeout must be positive, got {timeout_s:g} s")
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
    slow = dist.new_group(backend="gloo", timeout=timedelta(seconds=LOAD_TIMEOUT_S))
    return Comm(dist.get_rank(), dist.get_world_size(), timeout_s, slow)


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
