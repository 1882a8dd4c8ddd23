"""One sandboxed interpreter: its bwrap command line, starting it, running a cell, checking it after the call and
killing it. The design and its reasons are in sandbox.py's docstring."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from gptoss.tools import procfs, sandbox_worker, scratch, seccomp
from gptoss.tools.cgroup import Cgroup, CgroupLimiter
from gptoss.tools.procfs import kill_uid, live_processes_of
from gptoss.tools.sandbox_types import Outcome, SandboxConfig, SandboxLimits, SandboxUnavailable, find_interpreter

T = TypeVar("T")
CONTROL_LINE_LIMIT = 4096  # bytes; the worker only sends {"ready": true, "fd": n}, {"started": seq}, {"done": seq}
BASE_PROCESSES = 3  # outer bwrap, bwrap's pid-namespace init, the interpreter
READ_SYSCALL = {"x86_64": 0, "aarch64": 63, "riscv64": 63}.get(os.uname().machine)  # for /proc/<pid>/syscall


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
            scratch.remove_all(self._scratch_root)
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
