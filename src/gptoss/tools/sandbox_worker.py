"""The interpreter loop that runs inside the sandbox (its source is passed to `python3 -c`; standard library only).

It is NOT a security boundary: the model's code runs in this same process and can rewrite it. It only makes the
common case pleasant (one namespace kept across calls, Jupyter-style display of the last expression, clean
tracebacks, background processes stopped and stdout/stderr restored after each call, threads the code started
waited for). Every limit is enforced outside it, by bubblewrap, rlimits and the host, which trusts nothing it says
and checks the interpreter (threads, processes, fds 1 and 2) itself after every call.

Channels: requests arrive as JSON lines on stdin (moved to a private fd so `input()` reads /dev/null); the code's
stdout and stderr go to the host's output pipe; "ready"/"started"/"done" JSON lines go to the control fd given in
argv[1].
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import linecache
import math
import os
import resource
import signal
import sys
import threading
import traceback
from typing import Any, BinaryIO


def open_channels(control_fd: int) -> tuple[BinaryIO, BinaryIO]:
    """Private copies of the request and control fds; fd 0 becomes /dev/null for the model's code."""
    requests = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    control = os.fdopen(os.dup(control_fd), "wb", buffering=0)
    os.close(control_fd)
    return requests, control


def set_cpu_budget(seconds: int) -> None:
    """Allow `seconds` more CPU time from now (RLIMIT_CPU counts the whole life of the process)."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    wanted = math.ceil(usage.ru_utime + usage.ru_stime) + seconds  # RLIMIT_CPU counts whole seconds
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (wanted, hard))


def compile_cell(code: str, filename: str) -> tuple[Any, Any]:
    """The cell as (statements, last expression or None), so the last expression's value can be shown."""
    tree = ast.parse(code, filename, "exec")
    last = None
    final = tree.body[-1] if tree.body else None
    if isinstance(final, ast.Expr):
        last = ast.Expression(final.value)
        tree.body.pop()
    body = compile(tree, filename, "exec")
    return body, (compile(last, filename, "eval") if last is not None else None)


def run_cell(code: str, number: int, namespace: dict[str, Any]) -> None:
    filename = f"<cell {number}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
    try:
        body, last = compile_cell(code, filename)
        exec(body, namespace)
        if last is not None:
            value = eval(last, namespace)
            if value is not None:
                namespace["_"] = value
                print(repr(value))
    except BaseException as e:  # the model's exception (SystemExit and KeyboardInterrupt too) is its output
        frames = e.__traceback__.tb_next if e.__traceback__ is not None else None  # drop this function's frame
        sys.stderr.write("".join(traceback.format_exception(type(e), e, frames)))


def stop_background_processes() -> None:
    """Kill every process of this sandbox except bubblewrap's init (pid 1) and this interpreter, then reap."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in (1, me):
            with contextlib.suppress(OSError):
                os.kill(int(entry), signal.SIGKILL)
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wait_for_threads() -> None:
    """Like a script's end: wait for the non-daemon threads the cell started (the host's wall clock bounds this).
    Daemon threads and idle executor workers (which never end by themselves) are not waited for: the host kills
    the interpreter if any thread is left."""
    futures = sys.modules.get("concurrent.futures.thread")
    executor_workers = getattr(futures, "_threads_queues", {})
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon and thread not in executor_workers:
            with contextlib.suppress(RuntimeError):
                thread.join()


def save_streams() -> tuple[int, int]:
    """Private copies of fds 1 and 2 (the host's output pipe), to put back after each cell."""
    return os.dup(1), os.dup(2)


def _usable(stream: Any, fd: int) -> bool:
    try:
        return stream is not None and not stream.closed and stream.fileno() == fd
    except (OSError, ValueError, AttributeError):
        return False


def _text_stream(fd: int) -> io.TextIOWrapper:
    raw = io.FileIO(fd, "wb", closefd=False)
    return io.TextIOWrapper(raw, "utf-8", "backslashreplace", line_buffering=True, write_through=True)


def restore_streams(saved: tuple[int, int]) -> None:
    """fds 1 and 2 back to the output pipe (a cell may have dup2'ed /dev/null over them), and sys.stdout/stderr
    back to working file objects on them."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    for fd, copy in zip((1, 2), saved, strict=True):
        with contextlib.suppress(OSError):
            os.dup2(copy, fd)
    for name, fd in (("__stdout__", 1), ("__stderr__", 2)):
        if not _usable(getattr(sys, name), fd):  # closed or replaced by the cell
            setattr(sys, name, _text_stream(fd))
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__


def main() -> None:
    requests, control = open_channels(int(sys.argv[1]))
    streams = save_streams()
    main_pid = os.getpid()
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    control.write(json.dumps({"ready": True, "fd": requests.fileno()}).encode() + b"\n")
    for number, line in enumerate(requests, start=1):
        request = json.loads(line)
        control.write(json.dumps({"started": request["seq"]}).encode() + b"\n")
        set_cpu_budget(int(request["cpu"]))
        run_cell(str(request["code"]), number, namespace)
        if os.getpid() != main_pid:  # a child forked by the cell fell through to here: it must not answer
            os._exit(0)
        wait_for_threads()
        restore_streams(streams)
        stop_background_processes()
        control.write(json.dumps({"done": request["seq"]}).encode() + b"\n")


if __name__ == "__main__":
    main()
