"""The process group: torchrun's environment in, collectives out (gloo, on CPU; unless GPTOSS_TP_SHM=0 the forward
pass's all-reduces and all-gathers go through shared memory when every rank is on this machine, see local.py).

Every collective is bounded by the group's timeout, so a rank that dies or hangs makes the others fail with a
clear error instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from gptoss.distributed import local
from gptoss.distributed.local import LocalGroup
from gptoss.errors import GptossError

R = TypeVar("R")

DEFAULT_TIMEOUT_S = 60.0
LOAD_TIMEOUT_S = 1800.0  # how long ranks wait for each other to finish loading (a big checkpoint from a cold disk)
MESSAGE_BYTES = 16 << 10  # the first broadcast of an announcement: length + pickle (a decode step's is ~1-7 KiB)
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
    local: LocalGroup | None = None  # shared memory, when every rank is on this machine

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over ranks in fp32 (bf16 partial sums would lose bits), returned in t's dtype."""
        acc, shm = t.to(torch.float32, copy=True).contiguous(), self.local  # never the caller's tensor
        if shm is not None and shm.fits(acc):
            return self._run("all_reduce", lambda: shm.all_reduce(acc)).to(t.dtype)
        self._run("all_reduce", lambda: dist.all_reduce(acc))
        return acc.to(t.dtype)

    def all_gather_columns(self, t: torch.Tensor, chunk: int, total: int) -> torch.Tensor:
        """Each rank's (T, <= chunk) columns -> (T, total), ranks in order (padded to equal sizes for gloo)."""
        padded = torch.zeros(t.shape[0], chunk, dtype=t.dtype)
        padded[:, : t.shape[1]] = t
        shm = self.local
        if shm is not None and shm.fits(padded):
            stacked = self._run("all_gather", lambda: shm.all_gather(padded))  # (world, T, chunk)
            return stacked.permute(1, 0, 2).reshape(t.shape[0], -1)[:, :total]
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        self._run("all_gather", lambda: dist.all_gather(parts, padded))
        return torch.cat(parts, dim=1)[:, :total]

    def broadcast(self, obj: object) -> object:
        """rank 0's obj on every rank (others pass None). One collective when its pickle fits MESSAGE_BYTES (a
        decode step's announcement does), two otherwise; broadcast_object_list always takes two."""
        head = torch.zeros(MESSAGE_BYTES, dtype=torch.uint8)
        data = pickle.dumps(obj) if self.leader else b""
        if self.leader:
            head[:8] = torch.tensor([len(data)], dtype=torch.int64).view(torch.uint8)
            first = data[: MESSAGE_BYTES - 8]
            head[8 : 8 + len(first)] = torch.frombuffer(bytearray(first), dtype=torch.uint8)
        self._run("broadcast", lambda: dist.broadcast(head, src=0))
        n = int(head[:8].view(torch.int64))
        if n > MESSAGE_BYTES - 8:
            rest = torch.frombuffer(bytearray(data[MESSAGE_BYTES - 8 :]), dtype=torch.uint8) if self.leader else None
            tail = rest if rest is not None else torch.empty(n - (MESSAGE_BYTES - 8), dtype=torch.uint8)
            self._run("broadcast", lambda: dist.broadcast(tail, src=0))
        else:
            tail = torch.empty(0, dtype=torch.uint8)
        if self.leader:
            return obj
        return pickle.loads(head[8 : 8 + min(n, MESSAGE_BYTES - 8)].numpy().tobytes() + tail.numpy().tobytes())

    def loaded(self) -> None:
        """Waits until every rank has loaded its slices (bounded by LOAD_TIMEOUT_S, not the collective timeout):
        the ranks then start together, so the first step's collectives wait for no one's loading."""
        self._run("barrier after loading", lambda: dist.barrier(group=self.load_group))

    def _run(self, what: str, fn: Callable[[], R]) -> R:
        try:
            return fn()
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
    rank, world = dist.get_rank(), dist.get_world_size()
    return Comm(rank, world, timeout_s, slow, _local_group(rank, world, timeout_s))


def _local_group(rank: int, world: int, timeout_s: float) -> LocalGroup | None:
    """The shared-memory group when every rank is on this machine and none set GPTOSS_TP_SHM=0, else None (gloo)."""
    wanted = local.supported() and os.environ.get("GPTOSS_TP_SHM", "1") != "0"
    peers: list[tuple[str, int, bool] | None] = [None] * world
    dist.all_gather_object(peers, (local.host_id(), os.getpid(), wanted))
    infos = [p for p in peers if p is not None]
    if len(infos) != world or not all(w for _, _, w in infos) or len({h for h, _, _ in infos}) != 1:
        return None
    box: list[str | None] = [None]
    if rank == 0:
        with contextlib.suppress(OSError):  # no room in /dev/shm: every rank stays on gloo
            box[0] = local.create(world)
    dist.broadcast_object_list(box, src=0)
    path = box[0]
    if path is None:
        return None
    group = LocalGroup.open(path, rank, world, timeout_s, [pid for _, pid, _ in infos])
    dist.barrier()  # every rank has it mapped: the name can go (the memory lives until the last rank exits)
    if rank == 0:
        os.unlink(path)
    return group


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
