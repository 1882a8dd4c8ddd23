"""The python tool: state across calls, reset, output handling, bad input, reaping, eviction, availability,
and many sandboxes at once."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gptoss.harmony import Author, Message, Role, ToolNamespaceConfig
from gptoss.tools import sandbox as sandbox_module
from gptoss.tools import scratch
from gptoss.tools.python import EMPTY_OUTPUT_HINT, PythonTool, python_description
from gptoss.tools.sandbox import SandboxConfig, SandboxPool, live_processes_of
from tests.tools.conftest import TEST_CONFIG, wait_until_gone

REPO = Path(__file__).resolve().parents[2]


def call(code: str, recipient: str = "python", channel: str = "analysis") -> Message:
    return (
        Message.from_author_and_content(Author.new(Role.ASSISTANT), code)
        .with_recipient(recipient)
        .with_channel(channel)
    )


@pytest.fixture
def tool(pool: SandboxPool) -> PythonTool:
    tool = PythonTool(pool)
    yield tool
    tool.close()


def test_state_persists_across_calls(tool: PythonTool) -> None:
    assert tool.execute("x = 20\nimport math") == EMPTY_OUTPUT_HINT
    assert tool.execute("x += 1\nprint(x * 2)") == "42\n"
    assert tool.execute("def f(n):\n    return math.factorial(n)\nf(5)") == "120\n"
    assert tool.execute("open('/tmp/note', 'w').write('kept')") == "4\n"
    assert tool.execute("open('/tmp/note').read()") == "'kept'\n"
    assert tool.execute("_") == "'kept'\n"  # the last shown value, as in Jupyter


def test_reset_forgets_everything(tool: PythonTool) -> None:
    tool.execute("secret = 1")
    tool.reset()
    out = tool.execute("print(secret)")
    assert "NameError: name 'secret' is not defined" in out
    assert "[NOTE]" not in out  # an explicit reset is not news to the caller


def test_empty_output_gives_the_reference_hint(tool: PythonTool) -> None:
    assert EMPTY_OUTPUT_HINT == (
        "[WARN] No output available. Use print() to output anything to stdout to receive the output"
    )
    assert tool.execute("y = 3") == EMPTY_OUTPUT_HINT
    assert tool.execute("None") == EMPTY_OUTPUT_HINT


def test_exceptions_show_the_models_frames_only(tool: PythonTool) -> None:
    out = tool.execute("def g():\n    return 1 / 0\ng()")
    assert out.startswith("Traceback (most recent call last):")
    assert 'File "<cell 1>", line 3, in <module>' in out
    assert 'File "<cell 1>", line 2, in g' in out
    assert out.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "sandbox_worker" not in out and "run_cell" not in out
    assert tool.execute("g.__name__") == "'g'\n"  # an exception does not lose the state


def test_syntax_error_and_system_exit(tool: PythonTool) -> None:
    out = tool.execute("def broken(:\n    pass")
    assert "SyntaxError" in out
    tool.execute("kept = 'yes'")
    out = tool.execute("import sys\nsys.exit(3)")
    assert "SystemExit: 3" in out
    assert tool.execute("kept") == "'yes'\n"


def test_stdout_and_stderr_are_both_returned(tool: PythonTool) -> None:
    out = tool.execute("import sys, subprocess\nprint('out')\nprint('err', file=sys.stderr)\n"
                       "subprocess.run(['echo', 'child'])")  # fmt: skip
    assert "out\n" in out and "err\n" in out and "child\n" in out
    assert "CompletedProcess" in out  # the value of the last expression


def test_input_reads_nothing(tool: PythonTool) -> None:
    assert "EOFError" in tool.execute("input('name? ')")
    assert tool.execute("print(1)") == "1\n"  # the protocol was not disturbed


def test_never_ending_code_is_a_clear_error_and_resets_state(tool: PythonTool) -> None:
    tool.execute("x = 5")
    start = time.monotonic()
    out = tool.execute("print('before', flush=True)\nwhile True:\n    pass")
    assert time.monotonic() - start < TEST_CONFIG.limits.wall_seconds + 1
    assert out.startswith("before\n")
    assert out.endswith(
        "[ERROR] Execution timed out after 2 seconds; the python process was killed and its state "
        "(variables, imports) was reset."
    )
    assert "NameError" in tool.execute("x")


def test_huge_output_is_cut(tool: PythonTool) -> None:
    out = tool.execute("print('a' * 100_000)\nprint('tail')")  # under the kill limit: shown head + tail
    assert "characters of output omitted" in out
    assert out.endswith("tail\n")
    assert len(out) < 21_000
    out = tool.execute("print('b' * 10_000_000)")
    assert out.endswith("[ERROR] Output exceeded 262144 bytes and was cut off; the python process was killed and "
                        "its state (variables, imports) was reset.")  # fmt: skip


def test_bad_code_input(tool: PythonTool) -> None:
    assert tool.execute("   \n") == (
        "[ERROR] No code was sent: the message to python must contain the Python code to run."
    )
    big = "x = 1\n" * 200_000
    assert tool.execute(big) == "[ERROR] The code is larger than 1048576 bytes; it was not run."


def test_process_answers_in_harmony_form(tool: PythonTool) -> None:
    [reply] = asyncio.run(tool.process(call("print('hi')", channel="analysis")))
    assert reply.author == Author(Role.TOOL, "python")
    assert reply.recipient == "assistant" and reply.channel == "analysis"
    assert reply.content[0].text == "hi\n"  # type: ignore[union-attr]
    [reply] = asyncio.run(tool.process(call('{"code": "print(2 + 2)"}', "functions.python", "commentary")))
    assert reply.author.name == "functions.python" and reply.channel == "commentary"
    assert reply.content[0].text == "4\n"  # type: ignore[union-attr]


def test_namespace_config_is_harmonys_with_the_real_timeout(pool: SandboxPool) -> None:
    assert python_description(120.0) == ToolNamespaceConfig.python().description
    config = PythonTool(pool).namespace_config()
    assert config.name == "python" and config.tools == []
    assert "time out after 2.0 seconds" in (config.description or "")
    assert "stateful Jupyter notebook" in (config.description or "")


def test_cancelled_call_stops_the_code(tool: PythonTool) -> None:
    async def cancel_soon() -> None:
        task = asyncio.ensure_future(tool.process(call("import time\ntime.sleep(60)")))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    tool.execute("1")
    uid = tool.session.uid
    assert uid is not None
    asyncio.run(cancel_soon())
    assert not wait_until_gone(uid, set(), seconds=2.0)


def test_idle_interpreters_are_reaped() -> None:
    pool = SandboxPool(dataclasses.replace(TEST_CONFIG, uid_base=62100, idle_seconds=0.3))
    try:
        tool = PythonTool(pool)
        tool.execute("v = 1")
        uid = tool.session.uid
        assert uid is not None and len(live_processes_of(uid)) == 3
        deadline = time.monotonic() + 3
        while pool.live_count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.live_count == 0
        assert not wait_until_gone(uid, set())
        out = tool.execute("print('v' in globals())")
        assert out.startswith("[NOTE] The python state was reset (idle for more than 0.005 minutes)")
        assert out.endswith("False\n")
    finally:
        pool.close()


def test_least_recently_used_idle_interpreter_is_evicted() -> None:
    pool = SandboxPool(dataclasses.replace(TEST_CONFIG, uid_base=62200, max_interpreters=2))
    try:
        a, b, c = PythonTool(pool), PythonTool(pool), PythonTool(pool)
        a.execute("name = 'a'")
        b.execute("name = 'b'")
        c.execute("name = 'c'")  # evicts a
        assert pool.live_count == 2
        assert b.execute("name") == "'b'\n"
        out = a.execute("print(globals().get('name'))")
        assert out.startswith("[NOTE] The python state was reset (evicted to make room for another conversation)")
    finally:
        pool.close()


def test_busy_pool_refuses_with_a_message() -> None:
    pool = SandboxPool(dataclasses.replace(TEST_CONFIG, uid_base=62300, max_interpreters=1))
    try:
        slow, other = PythonTool(pool), PythonTool(pool)
        worker = threading.Thread(target=slow.execute, args=("import time\ntime.sleep(3.0)",))
        worker.start()
        deadline = time.monotonic() + 20  # a loaded machine can take seconds to start a sandbox
        while not (slow.session.busy and slow.session.interpreter is not None) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert slow.session.interpreter is not None, "the first sandbox never started"
        out = other.execute("print(1)")
        worker.join()
        assert out == (
            "[ERROR] The python tool is busy: all 1 python sandboxes are running code; try again shortly. "
            "The code was not run."
        )
    finally:
        pool.close()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"bwrap": "/nonexistent/bwrap"}, "bubblewrap (`bwrap`) is not installed, and python code is never run"),
        ({"interpreter": "/nonexistent/python3"}, "no python interpreter for the sandbox at /nonexistent/python3"),
    ],
)
def test_unavailable_sandbox_never_runs_code(change: dict[str, str], expected: str) -> None:
    pool = SandboxPool(dataclasses.replace(TEST_CONFIG, uid_base=62400, **change))
    try:
        tool = PythonTool(pool)
        assert expected in (tool.unavailable_reason() or "")
        out = tool.execute("print('ran')")
        assert out.startswith("[ERROR] The python tool is unavailable: ")
        assert expected in out and out.endswith("The code was not run.")
        assert pool.live_count == 0 and tool.session.uid is None
    finally:
        pool.close()


def test_bwrap_missing_from_path(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = sandbox_module.unavailable_reason(SandboxConfig())
    assert reason is not None and "apt-get install bubblewrap" in reason


def test_not_root_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_module.os, "geteuid", lambda: 1000)
    reason = sandbox_module.unavailable_reason(SandboxConfig())
    assert reason is not None and "needs the server to run as root" in reason


def test_failed_start_is_reported() -> None:
    pool = SandboxPool(dataclasses.replace(TEST_CONFIG, uid_base=62450, interpreter="/usr/bin/false"))
    try:
        out = PythonTool(pool).execute("print(1)")
        assert out.startswith("[ERROR] The python tool is unavailable: the sandbox did not start (died)")
        assert pool.live_count == 0
    finally:
        pool.close()


def test_four_sandboxes_at_once_200_starts() -> None:
    """4 conversations at a time, 200 interpreter starts (each: 2 stateful calls, then close): no start fails."""
    pool = SandboxPool(dataclasses.replace(TEST_CONFIG, uid_base=62500, max_interpreters=4))
    failures: list[str] = []

    def conversation(i: int) -> None:
        tool = PythonTool(pool)
        try:
            first = tool.execute(f"n = {i}\nprint('start', n)")
            second = tool.execute("print(n * 2)")
            if first != f"start {i}\n" or second != f"{i * 2}\n":
                failures.append(f"{i}: {first!r} {second!r}")
        finally:
            tool.close()

    try:
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as executor:
            list(executor.map(conversation, range(200)))
        elapsed = time.monotonic() - start
        assert failures == []
        assert pool.live_count == 0
        print(f"200 sandbox starts at concurrency 4: {elapsed:.1f} s ({200 / elapsed:.1f} starts/s)")
    finally:
        pool.close()
    for uid in range(62500, 62504):
        assert not wait_until_gone(uid, set())


def test_state_survives_the_thread_that_started_it(tool: PythonTool) -> None:
    """bwrap's parent-death signal follows the starting *thread*; interpreters are started from a long-lived one."""
    starter = threading.Thread(target=tool.execute, args=("kept = 7",))
    starter.start()
    starter.join()
    time.sleep(0.2)
    assert tool.execute("kept") == "7\n"


def test_sandboxes_die_with_a_killed_server() -> None:
    # The "server" imports only the sandbox module (stub parent packages skip gptoss/__init__'s torch import).
    script = (
        "import dataclasses, sys, time, types\n"
        f"src = {str(REPO / 'src')!r}\n"
        "for name in ('gptoss', 'gptoss.tools'):\n"
        "    package = types.ModuleType(name)\n"
        "    package.__path__ = [src + '/' + name.replace('.', '/')]\n"
        "    sys.modules[name] = package\n"
        "from gptoss.tools.sandbox import SandboxConfig, SandboxLimits, SandboxPool\n"
        "pool = SandboxPool(SandboxConfig(SandboxLimits(wall_seconds=5), uid_base=62700, uid_count=4))\n"
        "session = pool.session()\n"
        'result = session.run(\'import subprocess; subprocess.Popen(["sleep", "100"]); print(1)\')\n'
        "print(result.output, end='', flush=True)\n"
        "print(session.uid, flush=True)\n"
        "time.sleep(60)\n"
    )
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == "1\n"
        uid = int(server.stdout.readline())
        assert len(live_processes_of(uid)) == 3
    finally:
        server.kill()
        server.wait()
    assert not wait_until_gone(uid, set())
    # Nor its capped scratch mounts: the next pool on these uids unmounts them before its first interpreter.
    mounts = Path(SandboxConfig().mount_dir) / str(uid)
    assert len(scratch.mounted_under(mounts)) == 3
    pool = SandboxPool(SandboxConfig(TEST_CONFIG.limits, uid_base=62700, uid_count=4))
    try:
        pool._sweep_once()  # what its first start does
        assert not scratch.mounted_under(mounts) and not mounts.exists()
        assert PythonTool(pool).execute("print(2)") == "2\n"
    finally:
        pool.close()
    # A killed server cannot remove its cgroups; the next pool reuses them. Leave none behind here.
    limiter = SandboxPool(TEST_CONFIG).memory_limiter()
    for parent in limiter.parents.values() if limiter is not None else []:
        stale = parent / f"gptoss-sandbox-{uid}"
        if stale.exists():
            stale.rmdir()


def test_cpu_limit_is_per_call() -> None:
    limits = dataclasses.replace(TEST_CONFIG.limits, cpu_seconds=1, wall_seconds=6.0)
    pool = SandboxPool(dataclasses.replace(TEST_CONFIG, uid_base=62460, uid_count=4, limits=limits))
    burn = "import time\nend = time.process_time() + 0.7\nwhile time.process_time() < end:\n    pass\nprint('ok')"
    try:
        tool = PythonTool(pool)
        assert tool.execute(burn) == "ok\n"
        assert tool.execute(burn) == "ok\n"  # a fresh second of CPU for every call
        start = time.monotonic()
        out = tool.execute("while True:\n    pass")
        assert time.monotonic() - start < 4
        assert out == (
            "[ERROR] The python process ended (killed by SIGXCPU: CPU time limit exceeded); its state was reset."
        )
    finally:
        pool.close()


def test_unexpected_host_failure_becomes_a_message(tool: PythonTool, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(code: str, wall_seconds: float | None = None, cancel: threading.Event | None = None) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(tool.session, "run", fail)
    assert tool.execute("print(1)") == (
        "[ERROR] The python tool failed (OSError: [Errno 24] Too many open files); its state was reset."
    )
