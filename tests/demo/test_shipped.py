"""The shipped demo model: expanded once into a folder named by its sha256, refused when corrupt or unlisted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptoss.config import PRESETS
from gptoss.demo.compact import CompactError, pack, sha256
from gptoss.demo.shipped import ensure_demo
from gptoss.random_checkpoint import write_random_checkpoint


@pytest.fixture()
def packaged(tmp_path: Path) -> tuple[Path, Path]:
    ckpt = write_random_checkpoint(tmp_path / "ckpt", PRESETS["tiny"], "hf", seed=0)
    file = tmp_path / "demo.safetensors"
    pack(ckpt, file)
    manifest = tmp_path / "demo.json"
    manifest.write_text(json.dumps({"sha256": sha256(file)}))
    return file, manifest


def test_expanded_once_into_a_folder_named_by_the_sha(packaged: tuple[Path, Path], tmp_path: Path) -> None:
    file, manifest = packaged
    path, created = ensure_demo(file, manifest, tmp_path / "data")
    assert created and path.name == f"demo-{sha256(file)[:12]}" and (path / "config.json").exists()
    assert sha256(path / "model.safetensors") == sha256(tmp_path / "ckpt" / "model.safetensors")
    assert ensure_demo(file, manifest, tmp_path / "data") == (path, False)


def test_corrupt_or_unlisted_files_are_refused(packaged: tuple[Path, Path], tmp_path: Path) -> None:
    file, manifest = packaged
    raw = bytearray(file.read_bytes())
    raw[-10] ^= 1
    file.write_bytes(bytes(raw))
    with pytest.raises(CompactError, match="the file is corrupt"):
        ensure_demo(file, manifest, tmp_path / "data")
    manifest.write_text("{}")
    with pytest.raises(CompactError, match="manifest has no 'sha256'; reinstall gptoss"):
        ensure_demo(file, manifest, tmp_path / "data")
    manifest.write_text("not json")
    with pytest.raises(CompactError, match="manifest is unreadable"):
        ensure_demo(file, manifest, tmp_path / "data")
