"""The interpreter loop that runs inside the sandbox (its source is passed to `python3 -c`; standard library only).

It is NOT a security boundary: the model's code runs in this same process and can rewrite it. It only makes the
common case pleasant (one namespace kept across calls, Jupyter-style display of the last expression, clean
tracebacks, background processes stopped after each call). Every limit is enforced outside it, by bubblewrap,
rlimits and the host, which trusts nothing it says.

Channels: requests arrive as JSON lines on stdin (moved to a private fd so `input()` reads /dev/null); the code's
stdout and stderr go to the host's output pipe; "ready"/"done" JSON lines go to the control fd given in argv[1].
"""

from __future__ import annotations

import ast
import contextlib
import json
import linecache
import math
import os
import resource
import signal
import sys
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


def restore_streams() -> None:
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def main() -> None:
    requests, control = open_channels(int(sys.argv[1]))
    main_pid = os.getpid()
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    control.write(json.dumps({"ready": True, "fd": requests.fileno()}).encode() + b"\n")
    for number, line in enumerate(requests, start=1):
        request = json.loads(line)
        set_cpu_budget(int(request["cpu"]))
        run_cell(str(request["code"]), number, namespace)
        if os.getpid() != main_pid:  # a child forked by the cell fell through to here: it must not answer
            os._exit(0)
        restore_streams()
        stop_background_processes()
        control.write(json.dumps({"done": request["seq"]}).encode() + b"\n")


if __name__ == "__main__":
    main()
