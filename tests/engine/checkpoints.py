"""A tiny random checkpoint with the full harmony vocabulary, written once per test session and shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from gptoss.engine.loader import ensure_tiny_random


def tiny_random_home(factory: pytest.TempPathFactory) -> Path:
    """An XDG_DATA_HOME whose gptoss/tiny-random holds the checkpoint `gptoss serve`/`chat` use by default."""
    home = factory.getbasetemp() / "xdg-data-home"
    ensure_tiny_random(home / "gptoss" / "tiny-random")
    return home
