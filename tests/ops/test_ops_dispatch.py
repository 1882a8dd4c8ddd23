"""ops/__init__.py picks the backend once, at import.

Each scenario re-imports gptoss.ops from scratch (with GPTOSS_OPS set, and sometimes the C extension hidden by an
import hook, as on a machine where its build failed). All scenarios run in one fresh interpreter, so that torch is
imported once. The fallback scenarios pass whether or not the extension is built; the ones that expect the native
backend FAIL when it is not built (CI builds it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gptoss.ops import native

SCENARIOS = {"auto": ("auto", False), "auto-hidden": ("auto", True), "ref-hidden": ("ref", True),
             "native-hidden": ("native", True), "bad-value": ("fast", False)}  # fmt: skip

CHILD = r"""
import contextlib, importlib, importlib.abc, io, json, os, sys

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "gptoss.ops.native_ext":
            raise ImportError("hidden by the test")
        return None

results = {}
for name, (value, hide) in json.loads(sys.argv[1]).items():
    for mod in [m for m in sys.modules if m == "gptoss.ops" or m.startswith("gptoss.ops.")]:
        del sys.modules[mod]
    os.environ["GPTOSS_OPS"] = value
    hook = Hide()
    if hide:
        sys.meta_path.insert(0, hook)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ops = importlib.import_module("gptoss.ops")
        results[name] = {"backend": ops.BACKEND, "moe": ops.moe_experts.__module__, "stderr": err.getvalue()}
    except Exception as e:
        results[name] = {"error": f"{type(e).__name__}: {e}", "stderr": err.getvalue()}
    finally:
        if hide:
            sys.meta_path.remove(hook)
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("GPTOSS_OPS", "GPTOSS_NATIVE_ISA")}
    p = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(SCENARIOS)], env=env, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr
    result: dict[str, dict[str, str]] = json.loads(p.stdout.strip().splitlines()[-1])
    return result


def test_auto_picks_native_quietly(outcomes: dict[str, dict[str, str]]) -> None:
    ok, why = native.available()
    if not ok:
        pytest.fail(f"native backend expected on this machine: {why}; run `pip install -e .`")
    o = outcomes["auto"]
    assert (o.get("backend"), o.get("moe")) == ("native", "gptoss.ops.native"), o
    assert o["stderr"] == ""


def test_auto_falls_back_to_reference_and_says_so_once(outcomes: dict[str, dict[str, str]]) -> None:
    o = outcomes["auto-hidden"]
    assert (o.get("backend"), o.get("moe")) == ("ref", "gptoss.ops.reference"), o
    notes = o["stderr"].splitlines()
    assert len(notes) == 1 and notes[0].startswith("gptoss:"), o
    assert "not built" in notes[0] and "reference" in notes[0], o


def test_ref_is_quiet_even_without_the_extension(outcomes: dict[str, dict[str, str]]) -> None:
    o = outcomes["ref-hidden"]
    assert (o.get("backend"), o.get("moe")) == ("ref", "gptoss.ops.reference"), o
    assert o["stderr"] == ""


def test_native_without_the_extension_is_an_error(outcomes: dict[str, dict[str, str]]) -> None:
    o = outcomes["native-hidden"]
    assert o.get("error", "").startswith("ImportError: GPTOSS_OPS=native"), o
    assert "pip install" in o["error"]


def test_bad_value_is_an_error(outcomes: dict[str, dict[str, str]]) -> None:
    o = outcomes["bad-value"]
    assert o.get("error", "").startswith("ValueError: GPTOSS_OPS='fast'"), o
