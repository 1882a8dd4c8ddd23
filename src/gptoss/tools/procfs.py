"""What the host reads about a sandbox from /proc: the processes of a uid, the threads and fds of the interpreter,
and how it freezes the interpreter between calls.

Between calls the interpreter is stopped (SIGSTOP: no thread of it runs, no signal handler, no fork) and checked
while stopped, so nothing it started can run on with no call active and no per-call limit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time


def thread_states(pid: int) -> dict[int, str] | None:
    """tid -> state letter for every thread of `pid`; None if the process is gone."""
    states: dict[int, str] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread just ended
        states[int(tid)] = stat[stat.rindex(b")") + 2 :].split()[0].decode()  # the name may contain ") "
    return states


def stop(pid: int, seconds: float = 0.5) -> bool:
    """SIGSTOP `pid` and wait until every one of its threads has stopped; False if that did not happen in time."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + seconds
    while True:
        states = thread_states(pid)
        if states is None:
            return False
        if all(state in ("T", "Z", "X") for state in states.values()):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)


def resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def live_threads(pid: int) -> int:
    """How many threads of `pid` have not exited (0 if the process is gone)."""
    states = thread_states(pid) or {}
    return sum(state not in ("Z", "X") for state in states.values())


def fd_target(pid: int, fd: int) -> str | None:
    """What fd `fd` of `pid` refers to (`pipe:[12345]`, `/dev/null`, ...); None if it is closed."""
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None


def pipe_name(fd: int) -> str:
    """The name /proc shows for an fd of the pipe that `fd` (either end) belongs to."""
    return f"pipe:[{os.fstat(fd).st_ino}]"


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
