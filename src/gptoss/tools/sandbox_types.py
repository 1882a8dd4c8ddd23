"""The python sandbox's settings, call outcomes and errors, and whether it can run on this machine (shared by
sandbox.py, which holds the design notes, and interpreter.py)."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from enum import StrEnum


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
