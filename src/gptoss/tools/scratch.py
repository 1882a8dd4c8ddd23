"""The sandbox's writable directories: tmpfs mounts made by the host with both a size and an inode cap.

bubblewrap's own `--tmpfs` takes a size but no inode count, so millions of empty files (about 1 KiB of kernel
memory each) were bounded only by a memory cgroup, or by nothing where there is none. The host (root) mounts one
tmpfs per writable directory with `size=` and `nr_inodes=`, owned by the slot's uid, under
`<mount_dir>/<uid>/<name>`, and bwrap binds it in; everything else the sandbox sees is read-only. Mounts of a uid
are removed when its interpreter stops, and stale ones (a server that died) before the uid is used again.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from pathlib import Path

MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MNT_DETACH = 2
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


class ScratchError(OSError):
    """A capped tmpfs could not be mounted or removed; the message names the path and the reason."""


@dataclass(frozen=True)
class Scratch:
    """One writable directory of the sandbox: where it appears inside, its byte and inode caps."""

    name: str  # the directory under <mount_dir>/<uid>/
    target: str  # where bwrap binds it inside the sandbox
    size_bytes: int
    inodes: int


def mount_tmpfs(path: Path, size_bytes: int, inodes: int, uid: int) -> None:
    options = f"size={size_bytes},nr_inodes={inodes},mode=1777,uid={uid},gid={uid}"
    flags = MS_NOSUID | MS_NODEV
    if _LIBC.mount(b"gptoss-sandbox", os.fsencode(path), b"tmpfs", flags, options.encode()) != 0:
        errno = ctypes.get_errno()
        raise ScratchError(errno, f"cannot mount a tmpfs at {path} ({options}): {os.strerror(errno)}")


def mounted_under(root: Path) -> list[Path]:
    """Mount points at or below `root` (deepest first), from this process's mount table."""
    found: list[Path] = []
    prefix = str(root).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")  # octal escapes such as \040
            if point == str(root) or point.startswith(prefix):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all(root: Path) -> None:
    """Detach every mount at or below `root` (lazily: a sandbox still dying keeps its view until it is gone)."""
    for point in mounted_under(root):
        if _LIBC.umount2(os.fsencode(point), MNT_DETACH) != 0:
            errno = ctypes.get_errno()
            raise ScratchError(errno, f"cannot unmount {point}: {os.strerror(errno)}")


def remove_all(root: Path) -> None:
    """Unmount everything at or below `root`, then remove its (now empty) mount points and `root` itself."""
    unmount_all(root)
    if root.is_dir():
        for child in root.iterdir():
            with contextlib.suppress(OSError):  # a lazily detached mount may still be busy for a moment
                child.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()


def mount_all(root: Path, uid: int, scratches: list[Scratch]) -> dict[str, Path]:
    """Fresh capped tmpfs mounts for one uid (stale ones removed first): scratch name -> host path."""
    unmount_all(root)
    root.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    root.parent.chmod(0o711)  # bwrap runs as the slot's uid and must reach the mount points
    root.mkdir(mode=0o711, exist_ok=True)
    paths: dict[str, Path] = {}
    try:
        for scratch in scratches:
            path = root / scratch.name
            path.mkdir(mode=0o700, exist_ok=True)
            mount_tmpfs(path, scratch.size_bytes, scratch.inodes, uid)
            paths[scratch.name] = path
    except OSError:
        unmount_all(root)
        raise
    return paths
