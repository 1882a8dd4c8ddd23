"""What the host reads about a sandboxed interpreter from /proc, and how it freezes it between calls.

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
