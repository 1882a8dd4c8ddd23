"""A small seccomp filter for the python sandbox (defense in depth; bubblewrap loads it with `--seccomp FD`).

bubblewrap already gives the code no capabilities, no network and no host files. This filter additionally refuses,
with EPERM, the system calls a sandboxed interpreter has no use for and that widen the kernel's attack surface or
let one sandboxed process tamper with another: ptrace and process_vm_*, keyrings, bpf, userfaultfd,
perf_event_open, io_uring, module and kexec loading, every mount API, unshare/setns, handle-based opens, swap,
reboot, acct, quotactl, fanotify, creating SysV IPC objects (shm, message queues, semaphores) and memfds. Calls
from another ABI (32-bit int 0x80 on x86_64, x32) are refused wholesale.

The program is classic BPF in the kernel's `struct sock_filter` layout, built here so no libseccomp is needed.
Syscall numbers come from the kernel headers (x86_64: asm/unistd_64.h; aarch64 and riscv64: asm-generic/unistd.h).
"""

from __future__ import annotations

import errno
import os
import struct

_BLOCKED = {
    # name: (x86_64, asm-generic)
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "bpf": (321, 280),
    "userfaultfd": (323, 282),
    "perf_event_open": (298, 241),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "unshare": (272, 97),
    "setns": (308, 268),
    "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "reboot": (169, 142),
    "acct": (163, 89),
    "quotactl": (179, 60),
    "fanotify_init": (300, 262),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    # SysV IPC objects and memfds are memory files outside every capped mount (shm segments even outlive their
    # process): without a memory cgroup, 300 MiB of shm, or 1 GiB of memfds, stayed held between calls.
    "shmget": (29, 194),
    "msgget": (68, 186),
    "semget": (64, 190),
    "memfd_create": (319, 279),
    "memfd_secret": (447, 447),
}
# machine -> (AUDIT_ARCH_*, column of _BLOCKED)
_ARCHES = {"x86_64": (0xC000003E, 0), "aarch64": (0xC00000B7, 1), "riscv64": (0xC00000F3, 1)}

_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_ALLOW = 0x7FFF0000  # SECCOMP_RET_ALLOW
_ERRNO = 0x00050000  # SECCOMP_RET_ERRNO
_X32_BIT = 0x40000000


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def filter_program(machine: str | None = None) -> bytes | None:
    """The compiled filter for this machine's architecture, or None where it is not supported."""
    arch = _ARCHES.get(machine or os.uname().machine)
    if arch is None:
        return None
    audit_arch, column = arch
    numbers = sorted({pair[column] for pair in _BLOCKED.values()})
    deny = _ERRNO | errno.EPERM
    # Layout: [0] load arch, [1] other arch -> deny, [2] load nr, [3] x32 -> deny, [4..] blocked -> deny,
    # then allow, then deny. Jump offsets count instructions after the jump.
    n = len(numbers)
    program = [_insn(_LD_W_ABS, 4), _insn(_JEQ_K, audit_arch, 0, n + 3), _insn(_LD_W_ABS, 0)]
    program.append(_insn(_JGE_K, _X32_BIT, n + 1, 0))
    for i, number in enumerate(numbers):
        program.append(_insn(_JEQ_K, number, n - i, 0))
    program += [_insn(_RET_K, _ALLOW), _insn(_RET_K, deny)]
    return b"".join(program)
