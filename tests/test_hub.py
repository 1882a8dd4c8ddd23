"""Weights by name: resolution through a Hugging Face cache laid out as huggingface_hub lays it out (blobs, refs,
snapshots with symlinks), offline; the messages when the name is not there."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gptoss.engine.loader import served_name
from gptoss.errors import CheckpointError
from gptoss.hub import download_hint, is_hub_name, resolve, split_name

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def populate(cache: Path, repo: str, checkpoint: Path, files: list[str] | None = None) -> Path:
    """models--org--name/{blobs/<sha256>, refs/main, snapshots/<commit>/<file> -> ../../blobs/<sha256>}."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir()
    names = files if files is not None else [p.name for p in checkpoint.iterdir() if p.is_file()]
    for name in names:
        data = (checkpoint / name).read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_names_and_paths() -> None:
    assert is_hub_name("openai/gpt-oss-20b") and is_hub_name("openai/gpt-oss-20b@main")
    assert not is_hub_name("/abs/path") and not is_hub_name("gpt-oss-20b") and not is_hub_name("./a/b")
    assert split_name("org/name@v1.0") == ("org/name", "v1.0")
    assert split_name("org/name") == ("org/name", None)


def test_existing_local_folder_is_not_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not is_hub_name("org/name")


def test_resolves_from_the_cache_offline(tiny_dir: Path, tmp_path: Path, offline: None) -> None:
    snapshot = populate(tmp_path, "someorg/tiny-oss", tiny_dir)
    assert resolve("someorg/tiny-oss", cache_dir=tmp_path) == snapshot
    assert resolve(f"someorg/tiny-oss@{COMMIT}", cache_dir=tmp_path) == snapshot
    assert served_name(snapshot) == "tiny-oss"


def test_missing_model_offline_says_what_to_run(tmp_path: Path, offline: None) -> None:
    with pytest.raises(CheckpointError) as e:
        resolve("openai/gpt-oss-20b", cache_dir=tmp_path)
    assert str(e.value) == (
        "openai/gpt-oss-20b is not (completely) in the Hugging Face cache and HF_HUB_OFFLINE forbids downloading it: "
        f"run `{download_hint('openai/gpt-oss-20b')}` on a machine with network (same HF_HOME), or unset HF_HUB_OFFLINE"
    )
    assert download_hint("o/n@r1") == (
        "hf download o/n --revision r1 --include config.json 'model*.safetensors' model.safetensors.index.json"
    )


def test_incomplete_snapshot_is_not_used(tiny_dir: Path, tmp_path: Path, offline: None) -> None:
    populate(tmp_path, "someorg/half", tiny_dir, files=["config.json"])  # shards never arrived
    with pytest.raises(CheckpointError, match="not \\(completely\\) in the Hugging Face cache"):
        resolve("someorg/half", cache_dir=tmp_path)


def test_serve_and_chat_resolve_names_through_the_cache(tiny_dir: Path, tmp_path: Path) -> None:
    """The CLI end to end in a fresh process (huggingface_hub reads HF_HUB_CACHE/HF_HUB_OFFLINE at import)."""
    cache = tmp_path / "hub"
    populate(cache, "someorg/tiny-oss", tiny_dir)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    code = (
        "from gptoss.cli.__main__ import build_parser; from gptoss.cli.serve import resolve_checkpoint, "
        "server_config; from rich.console import Console; import sys; "
        "args = build_parser().parse_args(['serve', '--model', sys.argv[1], '--store', sys.argv[2]]); "
        "print(server_config(args, resolve_checkpoint(args.model, Console(stderr=True))).model_name)"
    )
    argv = [sys.executable, "-c", code, "someorg/tiny-oss@main", str(tmp_path / "s.db")]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tiny-oss"
    missing = [sys.executable, "-m", "gptoss", "chat", "--model", "someorg/absent"]
    failed = subprocess.run(missing, env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("gptoss chat: error: someorg/absent is not (completely) in the Hugging Face cache")
