"""The attack corpus: hostile snippets run by the python tool. None may succeed, and nothing of the sandbox may
outlive the call by more than a second.

A snippet prints "ESCAPED ..." if it gets what it wants from inside; the host checks the rest itself: a TCP/UDP
listener on loopback counts connections, marker paths on the host must not appear, a decoy process of the test
must survive, a secret in the test's environment must not show up, and the slot uid must have no extra process.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gptoss.tools.python import PythonTool
from gptoss.tools.sandbox import SandboxPool, live_processes_of
from tests.tools.conftest import TEST_CONFIG, TEST_LIMITS, Listener, wait_until_gone

SECRET = "gptoss-attack-secret-5f2c9a"
HOST_MARKERS = [
    "/usr/gptoss_pwned",
    "/etc/gptoss_pwned",
    "/gptoss_pwned",
    "/var/tmp/gptoss_pwned",
    "/root/gptoss_pwned",
]

ATTACKS: dict[str, str] = {
    "read_etc_shadow": """
try:
    print("ESCAPED", open("/etc/shadow").read()[:12])
except OSError as e:
    print("blocked", e.errno)
""",
    "read_host_files": """
import os
for path in ["/etc/passwd", "/etc/hostname", "/root/.bashrc", P["repo_file"], "/proc/1/root/etc/shadow"]:
    try:
        open(path).read(1)
        print("ESCAPED read", path)
    except OSError as e:
        print("blocked", path, e.errno)
for d in ["/root", "/work", "/home", "/var", "/etc"]:
    if os.path.exists(d):
        print("ESCAPED sees", d, os.listdir(d)[:3])
""",
    "write_outside_tmp": """
for path in P["markers"] + ["/usr/lib/gptoss_pwned", "/proc/gptoss_pwned"]:
    try:
        with open(path, "w") as f:
            f.write("pwned")
        print("wrote inside the sandbox only:", path)
    except OSError as e:
        print("blocked", path, e.errno)
""",
    "tcp_to_host_loopback": """
import socket
for host, port in [("127.0.0.1", P["tcp4"]), ("localhost", P["tcp4"])]:
    try:
        socket.create_connection((host, port), timeout=1).close()
        print("ESCAPED connected", host, port)
    except OSError as e:
        print("blocked", host, e.errno)
""",
    "tcp6_to_host_loopback": """
import socket
try:
    s = socket.socket(socket.AF_INET6)
    s.settimeout(1)
    s.connect(("::1", P["tcp6"]))
    print("ESCAPED connected ::1")
except OSError as e:
    print("blocked", e.errno)
""",
    "udp_to_host_loopback": """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    try:
        s.sendto(b"ping", ("127.0.0.1", P["udp4"]))
    except OSError as e:
        print("blocked", e.errno)
print("sent into the sandbox's own network namespace")
""",
    "network_interfaces_and_dns": """
import socket
names = [n for _, n in socket.if_nameindex()]
if names != ["lo"]:
    print("ESCAPED interfaces", names)
try:
    socket.getaddrinfo("example.com", 80)
    print("ESCAPED dns works")
except OSError as e:
    print("no dns", e.errno)
""",
    "fork_bomb": """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
""",
    "infinite_loop": "while True:\n    pass\n",
    "sleep_forever": "import time\ntime.sleep(10**6)\n",
    "memory_bomb": """
chunks = []
try:
    while True:
        chunks.append(bytearray(16 << 20))
except MemoryError:
    print("MemoryError after", len(chunks) * 16, "MiB")
    if len(chunks) * 16 > 512:
        print("ESCAPED allocated", len(chunks) * 16, "MiB")
""",
    "memory_bomb_many_processes": """
import os
readers = {}
release_r, release_w = os.pipe()
for _ in range(6):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.close(release_w)
        try:
            hoard = bytearray(160 << 20)
            os.write(w, b"y")
            os.read(release_r, 1)  # hold it until the parent has counted: "at once" must not depend on timing
        except MemoryError:
            pass
        os._exit(0)
    os.close(w)
    readers[pid] = r
reported = [pid for pid, r in readers.items() if os.read(r, 1) == b"y"]
# The cgroup's OOM killer may kill a child after it reported: only those still alive now hold their memory at once.
got = sum(os.waitpid(pid, os.WNOHANG) == (0, 0) for pid in reported)
os.close(release_w)
print("children holding 160 MiB at once:", got)
if got * 160 > P["total_mib"] and P["capped"]:
    print("ESCAPED", got * 160, "MiB across processes")
""",
    "detached_grandchild": """
import os, time
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(10**6)
    os._exit(0)
os.waitpid(pid, 0)
print("left a daemon behind")
""",
    "background_subprocess": """
import subprocess
subprocess.Popen(["sleep", "1000"], start_new_session=True)
subprocess.Popen(["sh", "-c", "nohup sleep 1000 >/dev/null 2>&1 &"])
print("started background processes")
""",
    "tamper_worker_then_leave_child": """
import subprocess, sys
worker = sys.modules["__main__"]
worker.stop_background_processes = lambda: None
subprocess.Popen(["sleep", "1000"], start_new_session=True)
print("disabled the worker's cleanup")
""",
    "hidden_nondumpable_daemon": """
import ctypes, os, sys, time
sys.modules["__main__"].stop_background_processes = lambda: None
if os.fork() == 0:
    os.setsid()
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: /proc/<pid> now looks root-owned to the host
    time.sleep(1000)
    os._exit(0)
print("left a non-dumpable daemon")
""",
    "fake_done_then_hang": """
import os, json, time
for fd in range(3, 32):
    try:
        os.write(fd, json.dumps({"done": 1}).encode() + b"\\n" + json.dumps({"done": 2}).encode() + b"\\n")
    except OSError:
        pass
time.sleep(10**6)
""",
    "signal_other_processes": """
import os, signal
for pid in [P["host_pid"], P["decoy_pid"], 1]:
    try:
        os.kill(pid, signal.SIGKILL)
        print("signalled", pid)
    except OSError as e:
        print("blocked", pid, e.errno)
try:
    os.kill(-1, signal.SIGKILL)
except OSError as e:
    print("kill -1", e.errno)
""",
    "read_server_environment": """
import os
print(sorted(os.environ))
for pid in ["self", "1", str(P["host_pid"])]:
    try:
        print(pid, open(f"/proc/{pid}/environ", "rb").read()[:2000])
    except OSError as e:
        print("blocked", pid, e.errno)
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            print(entry, open(f"/proc/{entry}/environ", "rb").read()[:2000])
        except OSError:
            pass
""",
    "become_root": """
import os
print("uid", os.getuid(), "euid", os.geteuid())
for call in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.setgroups([0])):
    try:
        call()
        if os.geteuid() == 0 or os.getegid() == 0:
            print("ESCAPED became root")
    except OSError as e:
        print("blocked", e.errno)
""",
    "nested_user_namespace": """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for name, flags in [("user", 0x10000000), ("mount", 0x00020000), ("net", 0x40000000)]:
    if libc.unshare(flags) == 0:
        print("ESCAPED unshare", name)
    else:
        print("blocked", name, ctypes.get_errno())
""",
    "mount_and_ptrace": """
import ctypes, subprocess, time
libc = ctypes.CDLL(None, use_errno=True)
if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0:
    print("ESCAPED mounted")
child = subprocess.Popen(["sleep", "30"])
time.sleep(0.05)
for pid in (1, child.pid):
    if libc.ptrace(16, pid, None, None) == 0:
        print("ESCAPED ptrace attach to", pid)
    else:
        print("ptrace blocked", ctypes.get_errno())
if libc.chroot(b"/tmp") == 0:
    print("ESCAPED chroot")
child.kill()
""",
    "fill_dev_shm": """
total = 0
try:
    with open("/dev/shm/fill", "wb") as f:
        for _ in range(8):
            f.write(b"x" * (1 << 20))
            total += 1 << 20
except OSError as e:
    print("stopped", e.errno)
if total > (1 << 20):
    print("ESCAPED wrote", total, "bytes to /dev/shm")
""",
    "fill_tmp": """
total = 0
try:
    for i in range(64):
        with open(f"/tmp/fill{i}", "wb") as f:
            f.write(b"x" * (1 << 20))
        total += 1 << 20
except OSError as e:
    print("stopped", e.errno)
if total > P["tmp_bytes"]:
    print("ESCAPED wrote", total, "bytes to /tmp")
""",
    "huge_file": """
written = 0
try:
    with open("/mnt/data/big", "wb") as f:
        for _ in range(8):
            f.write(b"x" * (1 << 20))
            f.flush()
            written += 1 << 20
except OSError as e:
    print("stopped", e.errno)
if written > P["fsize"]:
    print("ESCAPED file of", written)
""",
    "output_flood": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
    "open_file_exhaustion": """
files = []
try:
    while True:
        files.append(open("/dev/null"))
except OSError as e:
    print("stopped at", len(files), e.errno)
if len(files) > P["nofile"]:
    print("ESCAPED opened", len(files))
""",
    "raise_own_limits": """
import resource
for limit in (resource.RLIMIT_NPROC, resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_NOFILE):
    soft, hard = resource.getrlimit(limit)
    try:
        resource.setrlimit(limit, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        print("ESCAPED raised", limit)
    except (ValueError, OSError) as e:
        print("blocked", limit)
""",
    "kill_own_interpreter": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    "thread_spins_after_call": """
import threading
def spin():
    while True:
        pass
threading.Thread(target=spin, daemon=True).start()
print("spinner started")
""",
}

# What the tool message must say for snippets that have to be stopped.
EXPECTED = {
    "fork_bomb": "[ERROR] Execution timed out after 2 seconds",
    "infinite_loop": "[ERROR] Execution timed out after 2 seconds",
    "sleep_forever": "[ERROR] Execution timed out after 2 seconds",
    "fake_done_then_hang": "[ERROR] The code or processes it started kept running after the call ended",
    "output_flood": "[ERROR] Output exceeded 262144 bytes",
    "tamper_worker_then_leave_child": "[ERROR] The code or processes it started kept running after the call ended",
    "hidden_nondumpable_daemon": "[ERROR] The code or processes it started kept running after the call ended",
    "kill_own_interpreter": "[ERROR] The python process ended (killed by SIGKILL)",
    "memory_bomb": "MemoryError after",
    "thread_spins_after_call": "kept running after the call ended (1 thread still running;",
}


@pytest.fixture(scope="module")
def decoy() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTOSS_ATTACK_SECRET", SECRET)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_is_contained(
    name: str,
    pool: SandboxPool,
    listeners: dict[str, Listener],
    decoy: subprocess.Popen[bytes],
    secret_env: None,
) -> None:
    limiter = pool.memory_limiter()
    params = {
        "tcp4": listeners["tcp4"].port,
        "tcp6": listeners["tcp6"].port,
        "udp4": listeners["udp4"].port,
        "host_pid": os.getpid(),
        "decoy_pid": decoy.pid,
        "repo_file": str(Path(__file__).resolve()),
        "markers": HOST_MARKERS,
        "tmp_bytes": TEST_LIMITS.tmp_bytes,
        "fsize": TEST_LIMITS.file_size_bytes,
        "nofile": TEST_LIMITS.open_files,
        "total_mib": TEST_LIMITS.total_memory_bytes >> 20,
        "capped": limiter is not None and limiter.available,
    }
    tool = PythonTool(pool)
    try:
        start = time.monotonic()
        output = tool.execute(f"P = {params!r}\n{ATTACKS[name]}")
        elapsed = time.monotonic() - start
        uid = tool.session.uid
        assert uid is not None
        interpreter = tool.session.interpreter
        base = set(live_processes_of(uid)) if interpreter is not None else set()
        assert len(base) in (0, 3), f"{name}: unexpected processes {live_processes_of(uid)}"
        leftovers = wait_until_gone(uid, base)
        # Checks from the host's side.
        assert "ESCAPED" not in output, f"{name}: {output}"
        assert SECRET not in output
        assert all(listener.hits == 0 for listener in listeners.values()), f"{name}: reached a host listener"
        assert not [m for m in HOST_MARKERS if os.path.exists(m)], f"{name}: wrote a host file"
        assert decoy.poll() is None, f"{name}: killed a host process"
        assert not leftovers, f"{name}: processes left 1 s after the call: {leftovers}"
        assert elapsed < TEST_LIMITS.wall_seconds + 1.5, f"{name}: took {elapsed:.1f} s"
        if name in EXPECTED:
            assert EXPECTED[name] in output, output
        if name == "output_flood":
            assert len(output) < 25_000  # what the model sees is capped too
        # The tool still works afterwards (a fresh interpreter if the attack killed the old one).
        assert tool.execute("print(6 * 7)").endswith("42\n")
    finally:
        uid = tool.session.uid
        tool.close()
    assert uid is not None and not wait_until_gone(uid, set()), f"{name}: processes left after close"


def test_attack_corpus_is_large_enough() -> None:
    assert len(ATTACKS) >= 20


def test_total_memory_cap_is_active_or_explained(pool: SandboxPool) -> None:
    """The multi-process memory bomb above is only contained by the cgroup; without one, say why."""
    limiter = pool.memory_limiter()
    assert limiter is not None
    assert limiter.available or (limiter.reason or "").strip()
    if limiter.available:
        tool = PythonTool(pool)
        try:
            assert tool.execute("print(1)") == "1\n"
            interpreter = tool.session.interpreter
            assert interpreter is not None and interpreter.cgroup is not None
            limit_files = [
                p / name for p in interpreter.cgroup.paths for name in ("memory.limit_in_bytes", "memory.max")
            ]
            limits = {int(f.read_text()) for f in limit_files if f.exists()}
            assert limits == {TEST_LIMITS.total_memory_bytes}
            paths = interpreter.cgroup.paths
        finally:
            tool.close()
        assert not any(path.exists() for path in paths)  # removed with the interpreter


def test_hidden_daemon_is_found_without_a_cgroup_too() -> None:
    """Without a cgroup the host finds the sandbox's processes by uid, including non-dumpable ones."""
    pool = SandboxPool(dataclasses.replace(TEST_CONFIG, uid_base=62950, uid_count=4, cgroups=False))
    try:
        tool = PythonTool(pool)
        output = tool.execute(ATTACKS["hidden_nondumpable_daemon"])
        assert EXPECTED["hidden_nondumpable_daemon"] in output
        assert tool.session.uid is not None and not wait_until_gone(tool.session.uid, set())
    finally:
        pool.close()
