"""Checkpoints for the `serve` and `chat` commands: the tiny random fallback, and loading with byte progress.

Loading memory-maps the weights, so the slow part of a cold start is the first read of each page from disk. We
read the files through once first (which fills the page cache), reporting bytes as we go; that gives an honest
progress bar, and the load that follows runs from memory.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import platformdirs

from gptoss.config import PRESETS
from gptoss.weights import open_checkpoint

# The tiny preset with the full o200k_harmony vocabulary (so it can emit harmony's special tokens) and a
# 4096-token context. Its weights are random: it exercises every code path, but what it writes is noise.
TINY_RANDOM = dataclasses.replace(PRESETS["tiny"], vocab_size=201088, rope_scaling_factor=64.0)
READ_CHUNK = 16 << 20

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


def tiny_random_dir() -> Path:
    return Path(platformdirs.user_data_dir("gptoss")) / "tiny-random"


def ensure_tiny_random(path: Path | None = None) -> tuple[Path, bool]:
    """(the folder, whether it was created now). Written to a side folder and renamed, so an interrupted
    write never leaves a half checkpoint behind."""
    from gptoss.random_checkpoint import write_random_checkpoint

    path = path or tiny_random_dir()
    if (path / "config.json").exists():
        return path, False
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    write_random_checkpoint(partial, TINY_RANDOM, "hf", seed=0)
    try:
        partial.rename(path)
    except OSError:  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)
    return path, True


def weight_files(path: Path) -> list[Path]:
    return sorted(set(open_checkpoint(path).files.values()))


def read_through(files: list[Path], progress: Progress) -> None:
    total = sum(f.stat().st_size for f in files)
    done = 0
    buffer = bytearray(READ_CHUNK)
    progress(0, total)
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while n := fh.readinto(buffer):
                done += n
                progress(done, total)


def served_name(path: Path) -> str:
    """The id /v1/models shows: the checkpoint folder's name (its parent's for an `original/` folder); for a
    Hugging Face cache snapshot (models--org--name/snapshots/<commit>), the repo's name."""
    path = path.resolve()
    folder = path.parent if path.name == "original" else path
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent.name.split("--")[-1]
    return folder.name
