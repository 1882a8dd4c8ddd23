"""All-reduce and all-gather through shared memory, for ranks on one machine (a decode step's many small collectives).

gloo moves every collective through TCP and its worker threads: on this 2-core machine ~0.1-0.2 ms and as much CPU
per call, and a gpt-oss-20b decode token makes 49 of them. Here each rank copies its part into its own slot of a
shared buffer and publishes the collective's generation number; once every rank's number has arrived, each reads all
the slots (summing them in rank order, so every rank holds the same bits). Two buffers alternate: a rank reuses one
only after every rank has arrived at the next collective, by which time all of them have read it.

Waiting polls the numbers for a few microseconds, then sleeps on the late rank's number (a futex: the kernel wakes
it when that rank publishes, as gloo's socket would, without its threads; spinning or yielding instead starves the
late rank of CPU on a busy machine). Past the collective timeout, or as soon as a peer process is gone, it fails.
Only on x86-64, whose stores become visible to other cores in program order (the slot before the number);
elsewhere, across machines, or for tensors larger than a slot, the caller uses gloo.

On by default where it applies (GPTOSS_TP_SHM=0: gloo only). On a quiet 2-core Sapphire Rapids, 2 ranks decoding the
20b shape kept 0.93 of one process's speed with it against 0.72 over gloo; on the same machine loaded by other
processes (load average 10-14) it measured slower than gloo (ranks got a third of the CPU share while computing; the
cause was not found): set GPTOSS_TP_SHM=0 on an oversubscribed machine. See the issue 16 note.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

SLOT_FLOATS = 1 << 18  # 1 MiB a slot: a decode token's (1, H) sums and (1, V/world) logits fit; prefill uses gloo
SHM_DIR = "/dev/shm"
SPIN_POLLS = 100  # ~50 us of polling before sleeping on the late rank's number
SLEEP_S = 0.05  # a sleeping rank wakes this often to check the clock and whether its peers still live
FUTEX_WAIT, FUTEX_WAKE = 0, 1  # shared (not FUTEX_PRIVATE): the word lives in a mapping of several processes
_SYS_FUTEX = 202  # x86-64


class PeerGone(RuntimeError):
    """Another rank's process exited, or it did not arrive within the timeout."""


def supported() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64") and os.path.isdir(SHM_DIR)


def host_id() -> str:
    """Ranks with the same id share /dev/shm: the same machine since the same boot."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return f"{platform.node()}/{boot}"


def create(world: int) -> str:
    """A zeroed shared file sized for `world` ranks (rank 0 makes it; every rank then opens it)."""
    fd, path = tempfile.mkstemp(prefix="gptoss-tp-", dir=SHM_DIR)
    try:
        os.ftruncate(fd, _size(world))
    finally:
        os.close(fd)
    return path


def _size(world: int) -> int:
    return 8 * world + 2 * world * SLOT_FLOATS * 4


@dataclass
class LocalGroup:
    rank: int
    world: int
    timeout_s: float
    pids: list[int]  # every rank's process, to notice a dead peer without waiting for the timeout
    flags: memoryview  # (world,) int64 ("q"): the generation each rank last published (cheaper to poll than a tensor)
    flags_at: int  # its address, for the futex calls
    slots: torch.Tensor  # (2, world, SLOT_FLOATS) float32
    gen: int = 0

    @classmethod
    def open(cls, path: str, rank: int, world: int, timeout_s: float, pids: list[int]) -> LocalGroup:
        with open(path, "r+b") as f:
            mm = mmap.mmap(f.fileno(), _size(world))
        raw = torch.frombuffer(mm, dtype=torch.uint8)  # keeps the mapping alive (the file may be unlinked)
        flags = memoryview(mm)[: 8 * world].cast("q")
        flags_at = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        slots = raw[8 * world :].view(torch.float32).view(2, world, SLOT_FLOATS)
        return cls(rank, world, timeout_s, pids, flags, flags_at, slots)

    def fits(self, t: torch.Tensor) -> bool:
        return t.numel() <= SLOT_FLOATS and t.dtype == torch.float32

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of fp32 t (every rank gets the same bits)."""
        return self._exchange(t).sum(dim=0).view(t.shape)

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """(world, *t.shape): every rank's fp32 t, in rank order."""
        return self._exchange(t).clone().view(self.world, *t.shape)

    def _exchange(self, t: torch.Tensor) -> torch.Tensor:
        n = t.numel()
        self.gen += 1
        slots = self.slots[self.gen % 2, :, :n]
        slots[self.rank].copy_(t.reshape(-1))
        self.flags[self.rank] = self.gen  # after the slot: x86 makes the two stores visible in this order
        _futex(self._word(self.rank), FUTEX_WAKE, 1 << 30)  # wake the ranks sleeping on our number
        self._wait()
        return slots

    def _word(self, rank: int) -> int:
        return self.flags_at + 8 * rank  # the low 32 bits of rank's number (little-endian)

    def _wait(self) -> None:
        polls, deadline = 0, 0.0
        while True:
            late = [r for r in range(self.world) if self.flags[r] < self.gen]
            if not late:
                return
            polls += 1
            if polls <= SPIN_POLLS:
                continue  # the others usually arrive within microseconds
            seen = self.flags[late[0]] & 0xFFFFFFFF
            # sleeps until that rank publishes (or SLEEP_S): returns at once if it already did
            _futex(self._word(late[0]), FUTEX_WAIT, seen, _timespec(SLEEP_S))
            now = time.monotonic()
            deadline = deadline or now + self.timeout_s
            if now > deadline:
                raise PeerGone(f"rank(s) {', '.join(map(str, late))} did not arrive within {self.timeout_s:g} s")
            gone = [r for r in late if not _alive(self.pids[r])]
            if gone:
                raise PeerGone(f"rank(s) {', '.join(map(str, gone))} exited")


def _alive(pid: int) -> bool:
    """False once the process is gone or a zombie (a killed rank stays a zombie until torchrun reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _libc_syscall() -> Callable[..., int]:
    fn = ctypes.CDLL(None, use_errno=True).syscall
    fn.restype = ctypes.c_long
    return fn


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _timespec(seconds: float) -> _Timespec:
    return _Timespec(int(seconds), int(seconds % 1 * 1e9))


_syscall = _libc_syscall() if supported() else None


def _futex(addr: int, op: int, val: int, timeout: _Timespec | None = None) -> None:
    """FUTEX_WAIT (sleep while the 32-bit word at addr equals val) or FUTEX_WAKE (wake up to val sleepers); EAGAIN,
    ETIMEDOUT and EINTR all just return: the caller looks at the numbers again."""
    assert _syscall is not None
    ts = ctypes.byref(timeout) if timeout is not None else None
    _syscall(_SYS_FUTEX, ctypes.c_void_p(addr), ctypes.c_int(op), ctypes.c_int(val), ts, None, ctypes.c_int(0))
