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
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import pwd
import queue
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from gptoss.tools import procfs, sandbox_worker, scratch, seccomp
from gptoss.tools.cgroup import Cgroup, CgroupLimiter

T = TypeVar("T")
CONTROL_LINE_LIMIT = 4096  # bytes; the worker only sends {"ready": true, "fd": n} and {"done": seq}
BASE_PROCESSES = 3  # outer bwrap, bwrap's pid-namespace init, the interpreter
READ_SYSCALL = {"x86_64": 0, "aarch64": 63, "riscv64": 63}.get(os.uname().machine)  # for /proc/<pid>/syscall


class SandboxUnavailable(Exception):
    """The sandbox cannot run here (no bwrap, not root, no interpreter, start failure); the message says why."""


class SandboxBusy(Exception):
    """Every interpreter slot is executing a call right now."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-interpreter limits. Sizes in bytes, times in seconds."""

    wall_seconds: float = 120.0  # per call; the harmony python description promises "time out after 120.0 seconds"
    cpu_seconds: int = 120  # per call (RLIMIT_CPU soft limit, moved forward before each call)
    total_cpu_seconds: int = 3600  # per interpreter (RLIMIT_CPU hard limit)
    memory_bytes: int = 1 << 30  # RLIMIT_AS, per process
    total_memory_bytes: int = 2 << 30  # all processes and tmpfs of one interpreter (a cgroup, where possible)
    file_size_bytes: int = 16 << 20  # RLIMIT_FSIZE
    processes: int = 32  # RLIMIT_NPROC for the slot's uid (threads count)
    open_files: int = 64  # RLIMIT_NOFILE
    tmp_bytes: int = 64 << 20  # each of /tmp and /mnt/data
    tmp_inodes: int = 16384  # files and directories in each of /tmp and /mnt/data
    shm_bytes: int = 1 << 20  # /dev/shm
    shm_inodes: int = 256
    output_bytes: int = 1 << 20  # bytes of stdout+stderr read per call; more kills the interpreter
    code_bytes: int = 1 << 20  # largest accepted cell


@dataclass(frozen=True)
class SandboxConfig:
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    interpreter: str | None = None  # default: /usr/bin/python3 or /usr/local/bin/python3
    bwrap: str | None = None  # default: bwrap on PATH
    uid_base: int = 61000
    uid_count: int = 64
    lock_dir: str = "/run/gptoss-sandbox"
    mount_dir: str = "/run/gptoss-sandbox-mounts"  # the capped tmpfs mounts, <mount_dir>/<uid>/{tmp,data,shm}
    max_interpreters: int = 8
    idle_seconds: float = 600.0  # an interpreter idle this long is stopped (its state is lost)
    start_seconds: float = 15.0  # time allowed for an interpreter to start
    seccomp: bool = True  # also load seccomp.py's filter (x86_64, aarch64, riscv64)
    cgroups: bool = True  # also cap each interpreter's total memory with a cgroup where the machine allows


class Outcome(StrEnum):
    OK = "ok"
    TIMEOUT = "timeout"
    OUTPUT_LIMIT = "output_limit"
    DIED = "died"
    LEFTOVERS = "leftovers"  # a thread or process outlived the call
    STREAMS = "streams"  # fds 1/2 no longer lead to the output pipe after the call
    CANCELLED = "cancelled"  # the caller went away; nobody reads this result


@dataclass(frozen=True)
class ExecResult:
    output: str  # stdout and stderr interleaved, decoded as UTF-8 (invalid bytes replaced)
    outcome: Outcome
    detail: str = ""  # DIED: how it ended (exit status / signal); LEFTOVERS / STREAMS: what was found
    state_reset: str | None = None  # set when this call started a fresh interpreter after losing the old one
    ran: bool = True  # False when the interpreter never started running this call's code

    @property
    def killed(self) -> bool:
        return self.outcome is not Outcome.OK


# ---------------------------------------------------------------------------------------------------------------
# Availability


def find_interpreter(config: SandboxConfig) -> str | None:
    """A python3 under /usr (the only host tree the sandbox sees)."""
    candidates = [config.interpreter] if config.interpreter else ["/usr/bin/python3", "/usr/local/bin/python3"]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def unavailable_reason(config: SandboxConfig) -> str | None:
    """Why sandboxed python cannot run here, or None if it can (a failed start is reported separately)."""
    if not sys.platform.startswith("linux"):
        return "the python tool's sandbox (bubblewrap) needs Linux."
    bwrap = config.bwrap or shutil.which("bwrap")
    if bwrap is None or not os.access(bwrap, os.X_OK):
        return (
            "bubblewrap (`bwrap`) is not installed, and python code is never run unsandboxed. "
            "Install it with `apt-get install bubblewrap`."
        )
    missing = [tool for tool in ("setpriv", "prlimit") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} (from util-linux) not found; the sandbox needs them to set uid and limits."
    if os.geteuid() != 0:
        return (
            "the python sandbox gives every interpreter its own unprivileged uid, which needs the server to run "
            "as root (RLIMIT_NPROC does not hold for a shared uid)."
        )
    interpreter = find_interpreter(config)
    if interpreter is None:
        wanted = config.interpreter or "/usr/bin/python3"
        return f"no python interpreter for the sandbox at {wanted} (install Debian's `python3`)."
    if not interpreter.startswith("/usr/"):
        return f"the sandbox interpreter must live under /usr (the only host tree it sees), not {interpreter}."
    return None


# ---------------------------------------------------------------------------------------------------------------
# Processes of a uid


def processes_of(uid: int) -> dict[int, tuple[str, int]]:
    """pid -> (state letter, parent pid) for every process whose real or effective uid is `uid` (zombies too).

    /proc/<pid> is owned by the process's uid, except for a process that made itself non-dumpable: that one
    shows as root, so root-owned entries are checked in /proc/<pid>/status too."""
    found: dict[int, tuple[str, int]] = {}
    wanted = str(uid)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid not in (uid, 0):
                continue
            with open(f"/proc/{entry}/status", "rb") as f:
                fields = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
        except (FileNotFoundError, ProcessLookupError):
            continue
        uids = fields.get(b"Uid", b"").split()
        if wanted.encode() not in uids[:2]:
            continue
        state = fields.get(b"State", b"?").split()
        found[int(entry)] = ((state[0] if state else b"?").decode(), int(fields.get(b"PPid", b"0")))
    return found


def live_processes_of(uid: int) -> dict[int, int]:
    """pid -> parent pid for the non-zombie processes of `uid`."""
    return {pid: ppid for pid, (state, ppid) in processes_of(uid).items() if state not in ("Z", "X")}


def kill_uid(uid: int, deadline_seconds: float = 2.0) -> bool:
    """SIGKILL every process of `uid` until none is left alive; True if that happened before the deadline."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        alive = live_processes_of(uid)
        if not alive:
            return True
        if time.monotonic() > deadline:
            return False
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)


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
# One sandboxed interpreter


def _root_links() -> list[str]:
    """bwrap arguments recreating /bin, /lib, /lib64, /sbin (symlinks into /usr on merged-usr systems)."""
    args: list[str] = []
    for name in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def scratch_dirs(limits: SandboxLimits) -> list[scratch.Scratch]:
    """The sandbox's only writable directories, each its own capped tmpfs."""
    return [
        scratch.Scratch("tmp", "/tmp", limits.tmp_bytes, limits.tmp_inodes),
        scratch.Scratch("data", "/mnt/data", limits.tmp_bytes, limits.tmp_inodes),
        scratch.Scratch("shm", "/dev/shm", limits.shm_bytes, limits.shm_inodes),
    ]


def sandbox_command(
    config: SandboxConfig,
    uid: int,
    interpreter: str,
    control_fd: int,
    seccomp_fd: int | None,
    scratch_paths: dict[str, Path],
) -> list[str]:
    lim = config.limits
    bwrap = config.bwrap or shutil.which("bwrap") or "bwrap"
    # setpriv rather than Popen(user=...): Popen can only use vfork without uid/gid changes, and forking a server
    # with a model mapped costs milliseconds per page-table copy.
    setpriv = [shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    prlimit = [
        shutil.which("prlimit") or "prlimit",
        f"--cpu={lim.cpu_seconds}:{lim.total_cpu_seconds}",
        f"--as={lim.memory_bytes}",
        f"--fsize={lim.file_size_bytes}",
        f"--nproc={lim.processes}",
        f"--nofile={lim.open_files}",
        "--core=0",
        "--",
    ]
    mounts = ["--ro-bind", "/usr", "/usr", *_root_links(), "--proc", "/proc", "--dev", "/dev"]
    for item in scratch_dirs(lim):
        mounts += ["--bind", str(scratch_paths[item.name]), item.target]
    # bwrap's / and /dev are tmpfs without any cap: read-only once the mount points exist.
    mounts += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp"]
    isolation = ["--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--disable-userns"]
    isolation += ["--cap-drop", "ALL", "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if seccomp_fd is not None:
        isolation += ["--seccomp", str(seccomp_fd)]
    env = ["--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp"]
    env += ["--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONIOENCODING", "utf-8"]
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env += ["--setenv", var, "1"]  # one thread per process: threads count against RLIMIT_NPROC and AS
    worker = Path(sandbox_worker.__file__).read_text()
    run = ["--", interpreter, "-I", "-u", "-c", worker, str(control_fd)]
    return [*setpriv, *prlimit, bwrap, *mounts, *isolation, *env, *run]


class _Spawner:
    """Starts processes from one thread that lives as long as the process.

    bwrap's --die-with-parent is PR_SET_PDEATHSIG, which fires when the *thread* that started bwrap exits: a
    sandbox started from a short-lived thread (asyncio.to_thread, an executor) would be killed with it.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], T]) -> T:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="gptoss-sandbox-spawner", daemon=True)
                self._thread.start()
        future: Future[T] = Future()
        self._queue.put((fn, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            fn, future = self._queue.get()
            try:
                future.set_result(fn())
            except BaseException as e:  # handed to the caller's thread
                future.set_exception(e)


_SPAWNER = _Spawner()


class Interpreter:
    """One live sandboxed interpreter on one uid. Not thread-safe: its session serialises calls."""

    def __init__(self, config: SandboxConfig, uid: int, limiter: CgroupLimiter | None = None) -> None:
        self.config, self.uid, self.limiter = config, uid, limiter
        self.cgroup: Cgroup | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._out_fd = self._ctl_fd = self._in_fd = -1
        self._ctl_buf = b""
        self._seq = 0
        self._worker_pid: int | None = None  # host pid of the interpreter
        self._request_fd: int | None = None  # the fd it reads requests from (reported before any model code ran)
        self._output_pipe = ""  # what /proc shows for the output pipe, which fds 1 and 2 must lead to
        self._started = False  # the worker said it took the current request (its code may have run)
        self._scratch_root = Path(config.mount_dir) / str(uid)

    def start(self) -> None:
        interpreter = find_interpreter(self.config)
        if interpreter is None:
            raise SandboxUnavailable("no python interpreter for the sandbox")
        out_r, out_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        program = seccomp.filter_program() if self.config.seccomp else None
        filter_fd = None
        if program is not None:
            filter_fd, filter_w = os.pipe()
            os.write(filter_w, program)  # a few hundred bytes: fits the pipe buffer
            os.close(filter_w)
        passed = (ctl_w,) if filter_fd is None else (ctl_w, filter_fd)
        self._output_pipe = procfs.pipe_name(out_w)
        try:
            paths = scratch.mount_all(self._scratch_root, self.uid, scratch_dirs(self.config.limits))
        except OSError as e:
            for fd in (out_r, out_w, ctl_r, *passed):
                os.close(fd)
            raise SandboxUnavailable(f"could not mount the sandbox's capped scratch directories: {e}") from e
        try:
            command = sandbox_command(self.config, self.uid, interpreter, ctl_w, filter_fd, paths)
            self.proc = _SPAWNER.run(
                lambda: subprocess.Popen(
                    command, stdin=subprocess.PIPE, stdout=out_w, stderr=out_w, pass_fds=passed, env={},
                    start_new_session=True, cwd="/",
                )
            )  # fmt: skip
        except OSError as e:
            for fd in (out_r, out_w, ctl_r, *passed):
                os.close(fd)
            with contextlib.suppress(OSError):
                scratch.unmount_all(self._scratch_root)
            raise SandboxUnavailable(f"could not start bubblewrap: {e}") from e
        for fd in (out_w, *passed):
            os.close(fd)
        assert self.proc.stdin is not None
        self._in_fd, self._out_fd, self._ctl_fd = self.proc.stdin.fileno(), out_r, ctl_r
        for fd in (self._in_fd, self._out_fd, self._ctl_fd):
            os.set_blocking(fd, False)
        output = bytearray()
        status = self._pump(b"", self.config.start_seconds, output, ("ready", True))
        if status is Outcome.OK:
            self._find_worker()
            self._enter_cgroup()
            if self._worker_pid is None or not procfs.stop(self._worker_pid):
                self.kill()
                raise SandboxUnavailable("the sandbox started but its interpreter process could not be found")
        if status is not Outcome.OK:
            text = output.decode("utf-8", "replace").strip()[-2000:]
            self.kill()
            raise SandboxUnavailable(f"the sandbox did not start ({status.value}): {text or 'no output'}")

    def execute(self, code: str, wall_seconds: float, cpu_seconds: int) -> tuple[bytes, Outcome, str]:
        """Run one cell. Returns (output bytes, outcome, detail); any outcome but OK has killed the sandbox.
        `started` says afterwards whether the worker took the request (else the code certainly did not run)."""
        self._seq += 1
        self._started = False
        request = json.dumps({"code": code, "cpu": cpu_seconds, "seq": self._seq}).encode() + b"\n"
        output = bytearray()
        if self._worker_pid is not None:
            procfs.resume(self._worker_pid)
        status = self._pump(request, wall_seconds, output, ("done", self._seq))
        detail = ""
        if status is Outcome.OK:
            status, detail = self._settle()
        if status is Outcome.DIED:
            detail = self.exit_detail()
        if status is not Outcome.OK:
            self.kill()
        return bytes(output), status, detail

    @property
    def started(self) -> bool:
        return self._started

    def _settle(self) -> tuple[Outcome, str]:
        """After "done": the interpreter idle in its read, then stopped until the next call, and while stopped back
        to one thread, the base processes and the output pipe on fds 1 and 2 (else the sandbox is killed)."""
        if not self._worker_waits_for_requests():
            return Outcome.LEFTOVERS, "the interpreter kept running code"
        assert self._worker_pid is not None
        if not procfs.stop(self._worker_pid):
            if procfs.thread_states(self._worker_pid) is None:
                return Outcome.DIED, ""  # it exited right after answering
            return Outcome.LEFTOVERS, "the interpreter could not be paused"
        threads = procfs.live_threads(self._worker_pid)
        if threads != 1:
            plural = "s" if threads != 2 else ""
            return Outcome.LEFTOVERS, (
                f"{threads - 1} thread{plural} still running; join threads and shut down executors before a call ends"
            )
        if not self._only_base_processes():
            return Outcome.LEFTOVERS, "a process still running"
        for fd, name in ((1, "stdout"), (2, "stderr")):
            target = procfs.fd_target(self._worker_pid, fd)
            if target != self._output_pipe:
                return Outcome.STREAMS, f"{name} (fd {fd}) now leads to {target or 'nothing (closed)'}"
        return Outcome.OK, ""

    def _pump(self, request: bytes, seconds: float, output: bytearray, wanted: tuple[str, object]) -> Outcome:
        """Send `request`, collect output until the control line {key: value} `wanted` arrives (a stale "done"
        of an earlier call does not match), time runs out or the interpreter dies."""
        deadline = time.monotonic() + seconds
        limit = self.config.limits.output_bytes
        sel = selectors.DefaultSelector()
        try:
            if request:
                sel.register(self._in_fd, selectors.EVENT_WRITE)
            sel.register(self._out_fd, selectors.EVENT_READ)
            sel.register(self._ctl_fd, selectors.EVENT_READ)
            sent = 0
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return Outcome.TIMEOUT
                for key, _ in sel.select(remaining):
                    if key.fd == self._in_fd:
                        try:
                            sent += os.write(self._in_fd, request[sent : sent + 65536])
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:
                            return Outcome.DIED
                        if sent >= len(request):
                            sel.unregister(self._in_fd)
                    elif key.fd == self._out_fd:
                        if not self._read_output(output, limit):
                            sel.unregister(self._out_fd)
                        if len(output) > limit:
                            return Outcome.OUTPUT_LIMIT
                    else:
                        lines = self._read_control()
                        if lines is None:
                            self._drain(output, limit)
                            return Outcome.DIED
                        if any(line.get("started") == self._seq for line in lines):
                            self._started = True
                        matched = [line for line in lines if line.get(wanted[0]) == wanted[1]]
                        if matched:
                            fd = matched[0].get("fd")
                            if wanted[0] == "ready" and isinstance(fd, int):
                                self._request_fd = fd
                            self._drain(output, limit)
                            return Outcome.OUTPUT_LIMIT if len(output) > limit else Outcome.OK
        finally:
            sel.close()

    def _read_output(self, output: bytearray, limit: int) -> bool:
        """Read what is available; False at end of file."""
        try:
            chunk = os.read(self._out_fd, 65536)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        output += chunk[: max(0, limit + 1 - len(output))]
        return True

    def _drain(self, output: bytearray, limit: int) -> None:
        """Everything written before the control line is already in the pipe: take it without blocking."""
        while len(output) <= limit:
            try:
                chunk = os.read(self._out_fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            output += chunk[: limit + 1 - len(output)]

    def _read_control(self) -> list[dict[str, object]] | None:
        """The complete control lines read so far, None at end of file or on garbage."""
        try:
            chunk = os.read(self._ctl_fd, CONTROL_LINE_LIMIT)
        except BlockingIOError:
            return []
        if not chunk:
            return None
        self._ctl_buf += chunk
        *complete, self._ctl_buf = self._ctl_buf.split(b"\n")
        if len(self._ctl_buf) >= CONTROL_LINE_LIMIT:
            return None
        lines: list[dict[str, object]] = []
        for raw in complete:
            try:
                value = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                return None
            if not isinstance(value, dict):
                return None
            lines.append(value)
        return lines

    def _enter_cgroup(self) -> None:
        """Move the sandbox (3 processes, no model code has run yet) into a fresh memory/pids cgroup."""
        if self.limiter is None:
            return
        self.cgroup = self.limiter.create(str(self.uid))
        if self.cgroup is None:
            return
        try:
            for pid in live_processes_of(self.uid):
                self.cgroup.add(pid)
        except OSError as e:
            self.limiter.reason = f"could not move the sandbox into its cgroup: {e}"
            self.kill()
            raise SandboxUnavailable(self.limiter.reason) from e

    def _find_worker(self) -> None:
        """The interpreter is the grandchild of bwrap (bwrap -> its pid-namespace init -> python)."""
        assert self.proc is not None
        processes = live_processes_of(self.uid)
        inits = [pid for pid, ppid in processes.items() if ppid == self.proc.pid]
        workers = [pid for pid, ppid in processes.items() if inits and ppid == inits[0]]
        self._worker_pid = workers[0] if len(workers) == 1 else None

    def _worker_waits_for_requests(self) -> bool:
        """After "done", the interpreter's main thread must be blocked reading its request pipe. The model's code
        runs in that same process and could send a forged "done" and keep running; this catches it. (Where the
        kernel does not expose /proc/<pid>/syscall, or on an unknown architecture, the check is skipped.)"""
        if self._worker_pid is None or self._request_fd is None or READ_SYSCALL is None:
            return True
        deadline = time.monotonic() + 0.5
        while True:
            try:
                with open(f"/proc/{self._worker_pid}/syscall") as f:
                    fields = f.read().split()
            except OSError:
                return True
            if len(fields) >= 2 and fields[0] == str(READ_SYSCALL) and int(fields[1], 16) == self._request_fd:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)

    def _only_base_processes(self) -> bool:
        """After a call, only bwrap, its init and the interpreter may be alive (killed ones may linger as zombies)."""
        deadline = time.monotonic() + 0.25
        while len(self._live_pids()) > BASE_PROCESSES:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def _live_pids(self) -> set[int]:
        """The sandbox's live processes: from its cgroup when it has one (one file), else a scan of /proc."""
        listed = self.cgroup.pids() if self.cgroup is not None else None
        return listed if listed is not None else set(live_processes_of(self.uid))

    def exit_detail(self) -> str:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return "it stopped answering"
        if code > 128 and code - 128 in signal.valid_signals():
            code = -(code - 128)  # bwrap reports a signal death of its child as 128 + signal
        if code < 0:
            name = signal.Signals(-code).name
            if name == "SIGXCPU":
                return f"killed by {name}: CPU time limit exceeded"
            return f"killed by {name}"
        return f"exit status {code}"

    def close(self) -> None:
        """Ask the interpreter to exit (end of its input), then make sure nothing of it is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if self._worker_pid is not None:
                procfs.resume(self._worker_pid)  # paused between calls: it must run to see its input end
            self._close_stdin()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=1.0)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the sandbox's pid-namespace init (the kernel then kills and reaps everything inside), then any
        process still running as this uid; reap bwrap; close the pipes."""
        if self.proc is None:
            return
        for pid, ppid in live_processes_of(self.uid).items():
            if ppid == self.proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=2.0)
        kill_uid(self.uid)
        with contextlib.suppress(OSError):  # best effort here; the next start on this uid unmounts again or fails
            scratch.unmount_all(self._scratch_root)
        if self.cgroup is not None:
            deadline = time.monotonic() + 1.0
            while not self.cgroup.remove() and time.monotonic() < deadline:
                time.sleep(0.01)  # the last processes are still leaving it
            self.cgroup = None
        self._close_stdin()
        for fd in (self._out_fd, self._ctl_fd):
            if fd >= 0:
                os.close(fd)
        self._out_fd = self._ctl_fd = -1
        self.proc = None

    def _close_stdin(self) -> None:
        """Close the request pipe once, through its file object (a second raw close could hit a reused fd)."""
        if self.proc is not None and self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self._in_fd = -1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


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
            self.slots.sweep(lambda uid: scratch.unmount_all(root / str(uid)))

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
