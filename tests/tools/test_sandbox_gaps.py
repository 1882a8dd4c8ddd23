"""The five gaps an independent attack corpus found in the sandbox's own promises, each written as the attack,
run with and without the per-interpreter memory cgroup (`SandboxConfig.cgroups`): work outliving its call (a
thread, a process forked later, a signal handler), uncapped mounts (`/`, `/dev`, inode floods), muted output,
silent state loss on cancellation, and a call whose code never ran."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gptoss.harmony import Author, Message, Role
from gptoss.tools import EMPTY_OUTPUT_HINT, BuiltinTools, PythonTool
from gptoss.tools.sandbox import SandboxPool, live_processes_of
from tests.tools.conftest import TEST_CONFIG, TEST_LIMITS, wait_until_gone

KEPT_RUNNING = "[ERROR] The code or processes it started kept running after the call ended"
ONE_THREAD = "1 thread still running; join threads and shut down executors before a call ends"
STATE_LOST = "the python process was killed and its state (variables, imports) was reset."


@pytest.fixture(scope="module", params=["cgroup", "no-cgroup"])
def gap_pool(request: pytest.FixtureRequest) -> Iterator[SandboxPool]:
    """A pool with the memory cgroup (where the machine has one: otherwise it says why) and one without."""
    with_cgroup = request.param == "cgroup"
    base = 62300 if with_cgroup else 62350
    pool = SandboxPool(dataclasses.replace(TEST_CONFIG, uid_base=base, uid_count=16, cgroups=with_cgroup))
    limiter = pool.memory_limiter()
    assert (limiter is not None) == with_cgroup
    assert limiter is None or limiter.available or (limiter.reason or "").strip()
    yield pool
    pool.close()


@pytest.fixture
def tool(gap_pool: SandboxPool) -> Iterator[PythonTool]:
    tool = PythonTool(gap_pool)
    yield tool
    uid = tool.session.uid
    tool.close()
    assert uid is None or not wait_until_gone(uid, set()), "processes left after close"
    assert uid is None or not (Path(gap_pool.config.mount_dir) / str(uid)).exists(), "scratch mounts left"


def assert_cgroup_mode(tool: PythonTool) -> None:
    """The interpreter really runs in the mode the fixture promises (a cgroup where one can be made)."""
    interpreter = tool.session.interpreter
    assert interpreter is not None
    limiter = tool.pool.memory_limiter()
    assert (interpreter.cgroup is not None) == (limiter is not None and limiter.available)


def extra_processes_appear(uid: int, seconds: float) -> set[int]:
    """Processes of `uid` seen at any point during `seconds` (none may exist once the sandbox was killed)."""
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen |= set(live_processes_of(uid))
        time.sleep(0.02)
    return seen


# -- 1. work outliving its call ------------------------------------------------------------------------------------

THREAD_TICKS = """
import threading, time
ticks = []
def spin():
    while True:
        ticks.append(1)
        time.sleep(0.05)
threading.Thread(target=spin, daemon=True).start()
print("ticker started")
"""


def test_thread_ticking_between_calls_kills_the_sandbox(tool: PythonTool) -> None:
    tool.execute("kept = 1")
    assert_cgroup_mode(tool)
    out = tool.execute(THREAD_TICKS)
    assert out.startswith("ticker started\n")
    assert f"{KEPT_RUNNING} ({ONE_THREAD}); {STATE_LOST}" in out
    uid = tool.session.uid
    assert uid is not None and not wait_until_gone(uid, set())
    time.sleep(0.5)  # the ticker would tick about 10 times here
    out = tool.execute("print(len(ticks))")
    assert "NameError: name 'ticks' is not defined" in out  # a fresh interpreter: nothing ticked on


def test_signal_handler_cannot_run_between_calls(tool: PythonTool) -> None:
    """No thread at all: a timer signal's handler would run code between calls, but the interpreter is paused."""
    out = tool.execute(
        "import signal\nticks = 0\ndef tick(*_):\n    global ticks\n    ticks += 1\n"
        "signal.signal(signal.SIGALRM, tick)\nsignal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)\nprint('armed')"
    )
    assert out == "armed\n"
    time.sleep(1.0)  # 20 ticks if it ran
    out = tool.execute("signal.setitimer(signal.ITIMER_REAL, 0)\nprint(ticks)")
    assert int(out) <= 3  # a pending signal is delivered once, when the next call resumes it


def test_non_daemon_thread_is_waited_for_like_a_script(tool: PythonTool) -> None:
    out = tool.execute(
        "import threading, time\nt = threading.Thread(target=lambda: (time.sleep(0.3), print('thread done')))\n"
        "t.start()\nprint('main done')"
    )
    assert out == "main done\nthread done\n"
    assert tool.execute("t.is_alive()") == "False\n"  # state kept: nothing was left running


def test_idle_executor_worker_is_not_waited_for_but_announced(tool: PythonTool) -> None:
    out = tool.execute(
        "from concurrent.futures import ThreadPoolExecutor\nex = ThreadPoolExecutor(2)\n"
        "print(ex.submit(sum, [1, 2]).result())"
    )
    assert out.startswith("3\n")  # at once, not after the wall clock: its idle worker never ends by itself
    assert f"{KEPT_RUNNING} ({ONE_THREAD}); {STATE_LOST}" in out
    with_block = "with ThreadPoolExecutor(2) as ex:\n    print(ex.submit(sum, [1, 2]).result())"
    assert tool.execute(f"from concurrent.futures import ThreadPoolExecutor\n{with_block}") == "3\n"


FORK_AFTER_CALL = """
import os, threading, time
def later():
    time.sleep(0.3)  # after the call has ended
    if os.fork() == 0:
        while True:
            pass
threading.Thread(target=later, daemon=True).start()
print("armed")
"""


def test_process_forked_after_the_call_never_runs(tool: PythonTool) -> None:
    tool.execute("1")
    uid = tool.session.uid
    assert uid is not None
    out = tool.execute(FORK_AFTER_CALL)
    assert f"{KEPT_RUNNING} ({ONE_THREAD}); {STATE_LOST}" in out
    assert not extra_processes_appear(uid, 1.0), "a process of the sandbox ran after the call"


def test_forked_child_left_behind_is_found(tool: PythonTool) -> None:
    """A child that hides from the worker's cleanup (which the code can disable) is found by the host."""
    out = tool.execute(
        "import os, sys, time\nsys.modules['__main__'].stop_background_processes = lambda: None\n"
        "if os.fork() == 0:\n    time.sleep(100)\n    os._exit(0)\nprint('forked')"
    )
    assert f"{KEPT_RUNNING} (a process still running); {STATE_LOST}" in out
    assert tool.session.uid is not None and not wait_until_gone(tool.session.uid, set())


# -- 2. uncapped mounts ----------------------------------------------------------------------------------------------

FILL_ROOT_AND_DEV = """
import errno, os
for path in ["/fill", "/dev/fill", "/usr/fill"]:
    try:
        with open(path, "wb") as f:
            f.write(b"x" * (4 << 20))
        print("WROTE", path)
    except OSError as e:
        print("blocked", path, errno.errorcode[e.errno])
for line in open("/proc/self/mounts"):
    _, point, kind, options = line.split()[:4]
    if "rw" in options.split(",") and kind == "tmpfs":
        print("writable tmpfs", point, options)
"""


def test_root_and_dev_are_read_only_and_every_writable_tmpfs_is_capped(tool: PythonTool) -> None:
    out = tool.execute(FILL_ROOT_AND_DEV)
    assert "blocked /fill EROFS" in out and "blocked /dev/fill EROFS" in out and "blocked /usr/fill EROFS" in out
    assert "WROTE" not in out
    writable = {line.split()[2]: line.split()[3] for line in out.splitlines() if line.startswith("writable tmpfs")}
    assert sorted(writable) == ["/dev/shm", "/mnt/data", "/tmp"]
    for point, options in writable.items():
        caps = dict(o.split("=", 1) for o in options.split(",") if "=" in o)
        inodes = TEST_LIMITS.shm_inodes if point == "/dev/shm" else TEST_LIMITS.tmp_inodes
        size = TEST_LIMITS.shm_bytes if point == "/dev/shm" else TEST_LIMITS.tmp_bytes
        assert caps["nr_inodes"] == str(inodes), (point, options)
        assert caps["size"] == f"{size >> 10}k", (point, options)


INODE_FLOOD = """
import errno, os
for root in ["/tmp", "/mnt/data", "/dev/shm"]:
    made = 0
    try:
        while made < 10**6:
            os.close(os.open(f"{root}/f{made}", os.O_CREAT | os.O_WRONLY))
            made += 1
        print("NO CAP", root, made)
    except OSError as e:
        print(root, made, errno.errorcode[e.errno])
"""


def test_inode_flood_stops_at_the_cap(tool: PythonTool) -> None:
    out = tool.execute(INODE_FLOOD)
    assert "NO CAP" not in out
    made = {line.split()[0]: (int(line.split()[1]), line.split()[2]) for line in out.splitlines()}
    for root, cap in (("/tmp", TEST_LIMITS.tmp_inodes), ("/mnt/data", TEST_LIMITS.tmp_inodes)):
        assert made[root][1] == "ENOSPC" and cap - 16 <= made[root][0] < cap, out
    assert made["/dev/shm"][1] == "ENOSPC" and made["/dev/shm"][0] < TEST_LIMITS.shm_inodes, out
    assert tool.execute("print('still fine')") == "still fine\n"


SYSV_SHM_HOARD = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
for name, call in [("shmget", lambda: libc.shmget(0, 100 << 20, 0o1600)), ("msgget", lambda: libc.msgget(0, 0o1600)),
                   ("semget", lambda: libc.semget(0, 1000, 0o1600))]:
    if call() >= 0:
        print("CREATED", name)
    else:
        print("refused", name, ctypes.get_errno())
"""


def test_sysv_ipc_cannot_hold_memory_outside_the_caps(tool: PythonTool) -> None:
    """SysV shm segments are memory in no mount and outlive their process: creating them is refused."""
    out = tool.execute(SYSV_SHM_HOARD)
    assert out == "refused shmget 1\nrefused msgget 1\nrefused semget 1\n"


def test_memfds_cannot_hold_memory_outside_the_caps(tool: PythonTool) -> None:
    out = tool.execute("import os\ntry:\n    os.memfd_create('hoard')\nexcept OSError as e:\n    print(e.errno)")
    assert out == "1\n"  # EPERM: 60 memfds of 16 MiB each would otherwise hold 1 GiB in one interpreter


# -- 3. muted output -----------------------------------------------------------------------------------------------


def test_redirecting_stdout_and_stderr_does_not_mute_later_calls(tool: PythonTool) -> None:
    out = tool.execute(
        "import os, sys\nnull = os.open('/dev/null', os.O_WRONLY)\nos.dup2(null, 1)\nos.dup2(null, 2)\n"
        "print('into the void')"
    )
    assert "into the void" not in out
    assert tool.execute("print('heard again')\nprint('err too', file=sys.stderr)") == "heard again\nerr too\n"
    assert tool.execute("sys.stdout.close()\nsys.stderr.close()") == EMPTY_OUTPUT_HINT
    assert tool.execute("print(null)") == f"{int(tool.execute('null'))}\n"  # state kept throughout


def test_clobbering_the_workers_copies_too_is_announced(tool: PythonTool) -> None:
    out = tool.execute(
        "import os\nnull = os.open('/dev/null', os.O_WRONLY)\nmine = os.readlink('/proc/self/fd/1')\n"
        "for fd in range(3, 64):\n"
        "    try:\n        if fd != null and os.readlink(f'/proc/self/fd/{fd}') == mine:\n"
        "            os.dup2(null, fd)\n    except OSError:\n        pass\n"
        "os.dup2(null, 1)\nos.dup2(null, 2)"
    )
    assert out == (
        f"[ERROR] The code took over the interpreter's output: stdout (fd 1) now leads to /dev/null; {STATE_LOST}"
    )
    assert tool.execute("print('back')") == "back\n"


# -- 4. cancellation and calls whose code did not run --------------------------------------------------------------


def python_call(code: str) -> Message:
    return (
        Message.from_author_and_content(Author.new(Role.ASSISTANT), code)
        .with_recipient("python")
        .with_channel("analysis")
    )


def test_cancelled_call_is_announced_by_the_next_call(gap_pool: SandboxPool) -> None:
    tools = BuiltinTools(python=PythonTool(gap_pool))

    async def attack() -> str:
        await tools.run(python_call("x = 41"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(tools.run(python_call("import time\ntime.sleep(30)")), 0.5)
        return (await tools.run(python_call("print(x + 1)"))).output

    try:
        out = asyncio.run(attack())
    finally:
        tools.close()
    assert out.startswith(
        "[NOTE] The python state was reset (the previous call was cancelled before it finished); "
        "variables and imports from earlier calls are gone.\n"
    )
    assert "NameError: name 'x' is not defined" in out


def test_call_cancelled_before_it_started_does_not_run(tool: PythonTool) -> None:
    tool.execute("x = 1")
    event = threading.Event()
    tool.session.interrupt(event)  # the caller went away before the worker thread took the call
    assert tool.execute("x = 2", event) == "[ERROR] The call was cancelled; the code was not run."
    assert tool.execute("x") == "1\n"  # neither run nor state lost


def _worker_and_init(tool: PythonTool) -> tuple[int, int]:
    interpreter = tool.session.interpreter
    assert interpreter is not None and interpreter.proc is not None
    processes = live_processes_of(interpreter.uid)
    init = next(pid for pid, ppid in processes.items() if ppid == interpreter.proc.pid)
    worker = next(pid for pid, ppid in processes.items() if ppid == init)
    return worker, init


def test_interpreter_dying_between_calls_is_announced(tool: PythonTool) -> None:
    tool.execute("x = 1")
    worker, _ = _worker_and_init(tool)
    os.kill(worker, signal.SIGKILL)  # e.g. the OOM killer
    assert tool.session.interpreter is not None and tool.session.interpreter.proc is not None
    tool.session.interpreter.proc.wait(timeout=5)
    out = tool.execute("print(x)")
    assert out.startswith(
        "[NOTE] The python state was reset (the python process ended between calls: killed by SIGKILL); "
    )
    assert "NameError: name 'x' is not defined" in out  # the code did run, in a fresh interpreter


def test_interpreter_found_dead_when_the_call_is_sent_says_the_code_was_not_run(tool: PythonTool) -> None:
    tool.execute("x = 1")
    worker, init = _worker_and_init(tool)
    os.kill(init, signal.SIGSTOP)  # its parent cannot react: the sandbox still looks alive to the host
    os.kill(worker, signal.SIGKILL)
    out = tool.execute("print('never')")
    assert out.startswith("[ERROR] The python process ended (")
    assert out.endswith(") before running the code; it was not run.")
    assert tool.execute("print('fresh')") == "fresh\n"


def test_waited_for_thread_that_ends_the_process_is_announced(tool: PythonTool) -> None:
    out = tool.execute(
        "import os, threading, time\nthreading.Thread(target=lambda: (time.sleep(0.05), os._exit(3))).start()\n"
        "print('bye')"
    )
    assert out.startswith("bye\n")
    assert out.endswith("[ERROR] The python process ended (exit status 3); its state was reset.")
