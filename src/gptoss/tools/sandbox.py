"""Stateful Python interpreters in a bubblewrap sandbox, one per conversation, with hard limits.

Design (measured choices: shared/reference/sandbox-and-server-reliability.md):
- Each interpreter is `setpriv ... prlimit ... bwrap ... python3 -I -u -c <sandbox_worker>`, run as its own unprivileged
  uid (61000 + n, one per live interpreter, held with a lock file so other processes on the machine skip it):
  RLIMIT_NPROC is ignored for uid 0, and a uid of its own lets the host find and kill every process it made.
- bwrap gives it a read-only /usr (plus the /bin, /lib symlinks), no other host file, a read-only / and /dev,
  writable /tmp, /mnt/data and /dev/shm that are tmpfs mounts capped in bytes and inodes (scratch.py), its own
  network namespace (no interfaces but lo), pid/ipc/uts/cgroup namespaces, a cleared environment, no capabilities,
  no nested user namespaces, a new session, death with its parent.
- rlimits: CPU time (reset per call by the worker, capped per interpreter), address space, file size, processes,
  open files, no core dumps. A seccomp filter (seccomp.py) refuses ptrace, mounts, bpf, io_uring and the like. A
  memory+pids cgroup per interpreter (cgroup.py, where the machine allows) caps the sum over its processes. The host
  adds a wall clock per call and caps the bytes of output it reads.
- After every call the worker kills the processes the call left behind and restores fds 1/2; the host then stops
  the interpreter (SIGSTOP, until the next call: nothing of it runs between calls) and checks, while it is
  stopped, that it is back to one thread, the base processes and its output pipe on fds 1/2. Otherwise, or if the
  call ran out of time or output, or the interpreter died, it kills the whole sandbox (SIGKILL to its pid-namespace
  init, then anything left with the uid). Killed interpreters lose their state, and the next call says so.
- Idle interpreters are reaped by a background thread; the least recently used idle one is evicted when all slots
  are taken.

The host side is blocking code (selectors on pipes) so it serves both the sync chat loop and, via a thread, the
async server. Requires root (to switch uids) and bwrap; otherwise the tool reports why it is unavailable and
never runs code unsandboxed.

This file: uid slots, sessions and the pool. One interpreter: interpreter.py; settings, outcomes, availability:
sandbox_types.py; /proc reading and pausing: procfs.py; capped mounts: scratch.py; the code inside: sandbox_worker.py.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import pwd
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from gptoss.tools import scratch
from gptoss.tools.cgroup import CgroupLimiter
from gptoss.tools.interpreter import Interpreter
from gptoss.tools.procfs import kill_uid, live_processes_of, processes_of
from gptoss.tools.sandbox_types import (
    ExecResult,
    Outcome,
    SandboxBusy,
    SandboxConfig,
    SandboxLimits,
    SandboxUnavailable,
    find_interpreter,
    unavailable_reason,
)

__all__ = [
    "ExecResult",
    "Interpreter",
    "Outcome",
    "PythonSession",
    "SandboxBusy",
    "SandboxConfig",
    "SandboxLimits",
    "SandboxPool",
    "SandboxUnavailable",
    "UidSlots",
    "default_pool",
    "find_interpreter",
    "kill_uid",
    "live_processes_of",
    "processes_of",
    "unavailable_reason",
]


# ---------------------------------------------------------------------------------------------------------------
# Uid slots


class UidSlots:
    """Hands out uids from [base, base + count), each held with an exclusive lock file across processes."""

    def __init__(self, base: int, count: int, lock_dir: str) -> None:
        self.base, self.count, self.lock_dir = base, count, Path(lock_dir)
        self._held: dict[int, int] = {}  # uid -> lock fd
        self._next = 0
        self._lock = threading.Lock()

    def acquire(self) -> int:
        """A uid no other holder has and no process runs as. Live processes of a free uid are orphans of a server
        that died: they are killed. Zombies (a killed sandbox not yet reaped by init) count against RLIMIT_NPROC,
        so a uid without any is preferred."""
        self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._lock:
            fallback: int | None = None
            for i in range(self.count):
                uid = self.base + (self._next + i) % self.count
                if uid in self._held or _uid_has_account(uid) or not self._try_lock(uid):
                    continue
                if live_processes_of(uid):
                    kill_uid(uid)
                if not processes_of(uid):
                    self._next = (uid - self.base + 1) % self.count
                    return uid
                if fallback is None:
                    fallback = uid
                else:
                    self._unlock(uid)
            if fallback is None:
                raise SandboxBusy(f"no free sandbox uid in {self.base}..{self.base + self.count - 1}")
            return fallback

    def release(self, uid: int) -> None:
        with self._lock:
            self._unlock(uid)

    def sweep(self, cleanup: Callable[[int], None]) -> None:
        """Run `cleanup(uid)` for every uid of the range that no live holder has (what a dead server left)."""
        self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._lock:
            for uid in range(self.base, self.base + self.count):
                if uid not in self._held and self._try_lock(uid):
                    try:
                        cleanup(uid)
                    finally:
                        self._unlock(uid)

    def _try_lock(self, uid: int) -> bool:
        fd = os.open(self.lock_dir / f"uid-{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._held[uid] = fd
        return True

    def _unlock(self, uid: int) -> None:
        fd = self._held.pop(uid, None)
        if fd is not None:
            os.close(fd)  # closing drops the flock


def _uid_has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# Sessions and the pool


class PythonSession:
    """One conversation's python state: an interpreter started on first use, kept between calls."""

    def __init__(self, pool: SandboxPool) -> None:
        self.pool = pool
        self.interpreter: Interpreter | None = None
        self.last_used = time.monotonic()
        self.busy = False
        self.uid: int | None = None  # the uid of the current (or last) interpreter
        self._lost: str | None = None  # why the previous interpreter (and its state) went away
        self._lock = threading.Lock()  # held for a whole call
        self._call_lock = threading.Lock()  # guards `_running` between a call and `interrupt`
        self._running: threading.Event | None = None  # the cancel event of the call executing now
        self._interrupted = False  # `interrupt` killed the call executing now

    def run(self, code: str, wall_seconds: float | None = None, cancel: threading.Event | None = None) -> ExecResult:
        """Run `code` in this session's interpreter. Raises SandboxUnavailable / SandboxBusy; never runs code
        outside the sandbox. `cancel` is this call's event for `interrupt(cancel)`."""
        limits = self.pool.config.limits
        wall = limits.wall_seconds if wall_seconds is None else wall_seconds
        with self._lock:
            self.busy = True
            try:
                return self._run_locked(code, wall, cancel)
            finally:
                self.busy = False
                self.last_used = time.monotonic()

    def _run_locked(self, code: str, wall: float, cancel: threading.Event | None) -> ExecResult:
        if self.interpreter is not None and not self.interpreter.alive:
            self._release(f"the python process ended between calls: {self.interpreter.exit_detail()}")
        fresh = self.interpreter is None
        if fresh:
            self.interpreter = self.pool._start_interpreter(self)
            self.uid = self.interpreter.uid
        interpreter = self.interpreter
        assert interpreter is not None
        with self._call_lock:
            if cancel is not None and cancel.is_set():
                return ExecResult("", Outcome.CANCELLED, ran=False)  # nobody waits for it: keep `_lost` for later
            self._running, self._interrupted = cancel, False
        reset, self._lost = (self._lost if fresh else None), None
        try:
            out, outcome, detail = interpreter.execute(code, wall, self.pool.config.limits.cpu_seconds)
        finally:
            with self._call_lock:
                self._running = None
        if cancel is not None and cancel.is_set():
            if outcome is not Outcome.OK or self._interrupted:  # killed: the next call says why its state is gone
                self._release("the previous call was cancelled before it finished")
            outcome = Outcome.CANCELLED
        elif outcome is not Outcome.OK:
            self._release("killed")
            self._lost = None  # the caller reports this one itself
        return ExecResult(out.decode("utf-8", "replace"), outcome, detail, reset, interpreter.started)

    def reset(self) -> None:
        """Forget all state: the next call starts a fresh interpreter."""
        with self._lock:
            self._release("reset")
            self._lost = None

    def close(self) -> None:
        self.reset()

    def interrupt(self, cancel: threading.Event | None = None) -> None:
        """Stop a call from another thread because its caller went away; the state is then lost, and the next
        call says so. With `cancel` (the event given to that call's `run`): that call is killed if it is
        running, and never runs if it has not started yet. Without: whatever runs now is killed."""
        with self._call_lock:
            if cancel is not None:
                cancel.set()
                if self._running is not cancel:
                    return
            interpreter = self.interpreter
            proc = interpreter.proc if interpreter is not None else None  # read once: kill() may clear it
            if proc is not None:
                self._interrupted = True
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    def _release(self, reason: str) -> None:
        """Stop the interpreter (if any) and give its slot back. Caller holds the session lock."""
        interpreter, self.interpreter = self.interpreter, None
        if interpreter is not None:
            self._lost = reason
            self.pool._stop_interpreter(self, interpreter)

    def _try_reap(self, reason: str) -> bool:
        """Stop the interpreter if no call is running (used by the idle reaper and eviction)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self.interpreter is None:
                return False
            self._release(reason)
            return True
        finally:
            self._lock.release()


class SandboxPool:
    """All sandboxed interpreters of a process: slots (uids), the interpreter cap, the idle reaper."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.slots = UidSlots(self.config.uid_base, self.config.uid_count, self.config.lock_dir)
        self._limiter: CgroupLimiter | None = None
        self._live: dict[PythonSession, Interpreter] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self._swept = False
        _POOLS.add(self)

    def unavailable_reason(self) -> str | None:
        return unavailable_reason(self.config)

    def memory_limiter(self) -> CgroupLimiter | None:
        """The per-interpreter cgroup maker (None when config.cgroups is off); its `reason` says if it cannot work."""
        if not self.config.cgroups:
            return None
        with self._lock:
            if self._limiter is None:
                limits = self.config.limits
                self._limiter = CgroupLimiter(limits.total_memory_bytes, limits.processes)
            return self._limiter

    def session(self) -> PythonSession:
        return PythonSession(self)

    @property
    def live_count(self) -> int:
        with self._lock:
            return len(self._live)

    def uids_in_use(self) -> list[int]:
        with self._lock:
            return sorted(i.uid for i in self._live.values())

    def reap_idle(self) -> int:
        """Stop interpreters idle for longer than config.idle_seconds; returns how many were stopped."""
        now = time.monotonic()
        with self._lock:
            idle = [s for s in self._live if not s.busy and now - s.last_used > self.config.idle_seconds]
        minutes = self.config.idle_seconds / 60
        return sum(s._try_reap(f"idle for more than {minutes:g} minutes") for s in idle)

    def close(self) -> None:
        """Kill every interpreter of this pool and stop the reaper."""
        self._stop.set()
        with self._lock:
            sessions = list(self._live)
        for s in sessions:
            s.interrupt()
            s._try_reap("shutdown")
        with self._lock:
            leftovers = list(self._live.items())
            self._live.clear()
        for _, interpreter in leftovers:
            interpreter.kill()
            self.slots.release(interpreter.uid)

    def _start_interpreter(self, session: PythonSession) -> Interpreter:
        reason = self.unavailable_reason()
        if reason is not None:
            raise SandboxUnavailable(reason)
        self._make_room()
        self._sweep_once()
        uid = self.slots.acquire()
        interpreter = Interpreter(self.config, uid, self.memory_limiter())
        try:
            interpreter.start()
        except BaseException:
            self.slots.release(uid)
            raise
        with self._lock:
            self._live[session] = interpreter
        self._ensure_reaper()
        return interpreter

    def _sweep_once(self) -> None:
        """Unmount the scratch tmpfs (up to 64 MiB of RAM each) that a server killed earlier left behind."""
        with self._lock:
            if self._swept:
                return
            self._swept = True
        root = Path(self.config.mount_dir)
        if root.is_dir():
            self.slots.sweep(lambda uid: scratch.remove_all(root / str(uid)))

    def _stop_interpreter(self, session: PythonSession, interpreter: Interpreter) -> None:
        with self._lock:
            self._live.pop(session, None)
        interpreter.close()
        self.slots.release(interpreter.uid)

    def _make_room(self) -> None:
        """Evict least recently used idle interpreters until a slot is free; SandboxBusy if all are running."""
        while True:
            with self._lock:
                if len(self._live) < self.config.max_interpreters:
                    return
                idle = sorted((s for s in self._live if not s.busy), key=lambda s: s.last_used)
            if not idle:
                raise SandboxBusy(
                    f"all {self.config.max_interpreters} python sandboxes are running code; try again shortly"
                )
            idle[0]._try_reap("evicted to make room for another conversation")

    def _ensure_reaper(self) -> None:
        with self._lock:
            if self._reaper is not None and self._reaper.is_alive():
                return
            self._reaper = threading.Thread(target=self._reap_loop, name="gptoss-sandbox-reaper", daemon=True)
            self._reaper.start()

    def _reap_loop(self) -> None:
        interval = max(0.05, min(self.config.idle_seconds / 4, 10.0))
        while not self._stop.wait(interval):
            self.reap_idle()
            if self.live_count == 0:
                with self._lock:
                    if not self._live:
                        self._reaper = None
                        return


_POOLS: weakref.WeakSet[SandboxPool] = weakref.WeakSet()
_DEFAULT_POOL: SandboxPool | None = None
_DEFAULT_LOCK = threading.Lock()


def default_pool() -> SandboxPool:
    """The process-wide pool with the default configuration."""
    global _DEFAULT_POOL
    with _DEFAULT_LOCK:
        if _DEFAULT_POOL is None:
            _DEFAULT_POOL = SandboxPool()
        return _DEFAULT_POOL


@atexit.register
def _close_all_pools() -> None:
    for pool in list(_POOLS):
        pool.close()
