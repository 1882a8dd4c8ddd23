"""A memory (and pids) cgroup per sandboxed interpreter, where the machine lets us make one.

RLIMIT_AS bounds each process, not the sandbox: 32 processes of 1 GiB each could still exhaust the host. A cgroup
bounds the sum (tmpfs pages included). It is best effort and nested under the server's own cgroup, so whatever
limits the server lives under still apply: cgroup v1 (`memory` and `pids` hierarchies) or cgroup v2 with the
memory controller delegated to the server's cgroup. Where neither works, `reason` says why and the sandbox runs
with its rlimits only.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path."""
    found: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                found[name] = path
    return found


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


class CgroupLimiter:
    """Creates one cgroup per interpreter with a memory cap and a pids cap."""

    def __init__(self, memory_bytes: int, pids: int, name: str = "gptoss-sandbox") -> None:
        self.memory_bytes, self.pids, self.name = memory_bytes, pids, name
        self.parents: dict[str, Path] = {}  # "memory"/"pids" (v1) or "" (v2) -> the directory to create groups in
        self.reason: str | None = None
        self._detect()

    def _detect(self) -> None:
        own = _own_cgroups()
        if "memory" in own and _writable_dir(ROOT / "memory" / own["memory"].lstrip("/")):
            self.parents["memory"] = ROOT / "memory" / own["memory"].lstrip("/")
            if "pids" in own and _writable_dir(ROOT / "pids" / own["pids"].lstrip("/")):
                self.parents["pids"] = ROOT / "pids" / own["pids"].lstrip("/")
            return
        if "" in own and (ROOT / "cgroup.controllers").is_file():
            parent = ROOT / own[""].lstrip("/")
            try:
                enabled = (parent / "cgroup.subtree_control").read_text().split()
                if "memory" not in enabled:
                    (parent / "cgroup.subtree_control").write_text("+memory +pids")
            except OSError as e:
                self.reason = f"cgroup v2: cannot enable the memory controller below {parent} ({e.strerror})"
                return
            self.parents[""] = parent
            return
        self.reason = "no writable memory cgroup (v1) or delegated cgroup v2 here"

    @property
    def available(self) -> bool:
        return bool(self.parents)

    def create(self, tag: str) -> Cgroup | None:
        """A fresh cgroup for one interpreter, or None if none can be made."""
        if not self.parents:
            return None
        group = Cgroup()
        try:
            for kind, parent in self.parents.items():
                path = parent / f"{self.name}-{tag}"
                with contextlib.suppress(FileExistsError):
                    path.mkdir()
                group.paths.append(path)
                if kind == "memory":
                    (path / "memory.limit_in_bytes").write_text(str(self.memory_bytes))
                    with contextlib.suppress(OSError):  # absent without swap accounting
                        (path / "memory.memsw.limit_in_bytes").write_text(str(self.memory_bytes))
                elif kind == "pids":
                    (path / "pids.max").write_text(str(self.pids))
                else:
                    (path / "memory.max").write_text(str(self.memory_bytes))
                    with contextlib.suppress(OSError):
                        (path / "memory.swap.max").write_text("0")
                    with contextlib.suppress(OSError):
                        (path / "pids.max").write_text(str(self.pids))
        except OSError as e:
            group.remove()
            self.reason = f"could not set up a cgroup: {e}"
            return None
        return group


class Cgroup:
    def __init__(self) -> None:
        self.paths: list[Path] = []

    def add(self, pid: int) -> None:
        for path in self.paths:
            (path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> set[int] | None:
        """The live processes in the group (exited ones are not listed), or None if it cannot be read."""
        try:
            return {int(pid) for pid in (self.paths[0] / "cgroup.procs").read_text().split()}
        except (OSError, ValueError, IndexError):
            return None

    def memory_peak(self) -> int | None:
        """Highest memory use seen, in bytes (None where the kernel does not say)."""
        for path in self.paths:
            for name in ("memory.max_usage_in_bytes", "memory.peak"):
                with contextlib.suppress(OSError, ValueError):
                    return int((path / name).read_text())
        return None

    def remove(self) -> bool:
        """Remove the groups (they must be empty); True if all are gone."""
        done = True
        for path in self.paths:
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                done = False
        return done
