"""Importing gptoss sets OpenMP's wait policy before torch loads (gptoss/__init__.py), unless the user set one."""

from __future__ import annotations

import os
import subprocess
import sys


def _policy_after_import(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_value is not None:
        env["OMP_WAIT_POLICY"] = env_value
    code = "import gptoss, os, torch; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_idle_openmp_threads_sleep_by_default() -> None:
    assert _policy_after_import(None) == "PASSIVE"


def test_an_explicit_policy_wins() -> None:
    assert _policy_after_import("ACTIVE") == "ACTIVE"
