"""Weights by name: `--model openai/gpt-oss-20b[@revision]` through huggingface_hub.

The local Hugging Face cache is tried first (no network); only if the snapshot there is missing or incomplete is
the hub asked, for just the files the Hugging Face layout needs (config.json, the safetensors shards and their index:
not the `original/` or `metal/` copies), with huggingface_hub's progress bars and resumable downloads.
HF_HUB_OFFLINE=1 forbids the download. Every failure is one message saying what to run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from gptoss.errors import CheckpointError

HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
FILES = ["config.json", "model*.safetensors", "model.safetensors.index.json"]  # the Hugging Face layout only


def is_hub_name(spec: str) -> bool:
    """`org/name[@revision]` that is not an existing local path."""
    return HUB_NAME.match(spec) is not None and not Path(spec).expanduser().exists()


def split_name(spec: str) -> tuple[str, str | None]:
    repo, _, revision = spec.partition("@")
    return repo, revision or None


def offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return bool(constants.HF_HUB_OFFLINE) or env in ("1", "true", "yes", "on")


def download_hint(spec: str) -> str:
    repo, revision = split_name(spec)
    rev = f" --revision {revision}" if revision else ""
    return f"hf download {repo}{rev} --include config.json 'model*.safetensors' model.safetensors.index.json"


def cached(spec: str, cache_dir: Path | None = None) -> Path | None:
    """The complete snapshot in the local cache, or None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from gptoss.weights import open_checkpoint

    repo, revision = split_name(spec)
    try:
        path = Path(snapshot_download(repo, revision=revision, cache_dir=cache_dir, local_files_only=True))
    except LocalEntryNotFoundError:
        return None
    try:
        open_checkpoint(path)  # a snapshot folder can exist with shards still missing
    except CheckpointError:
        return None
    return path


def resolve(spec: str, cache_dir: Path | None = None) -> Path:
    """The checkpoint folder for a hub name: from the cache, else downloaded (unless HF_HUB_OFFLINE)."""
    found = cached(spec, cache_dir)
    if found is not None:
        return found
    if offline():
        raise CheckpointError(
            f"{spec} is not (completely) in the Hugging Face cache and HF_HUB_OFFLINE forbids downloading it: "
            f"run `{download_hint(spec)}` on a machine with network (same HF_HOME), or unset HF_HUB_OFFLINE"
        )
    return download(spec, cache_dir)


def download(spec: str, cache_dir: Path | None = None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, revision = split_name(spec)
    try:
        return Path(snapshot_download(repo, revision=revision, cache_dir=cache_dir, allow_patterns=FILES))
    except RevisionNotFoundError:
        raise CheckpointError(f"{spec}: the Hugging Face repo {repo} has no revision {revision!r}") from None
    except GatedRepoError:
        raise CheckpointError(
            f"{spec}: the repo is gated: accept its terms on huggingface.co, then `hf auth login`"
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"{spec}: no such local folder, and no such Hugging Face repo (or it is private: `hf auth login`)"
        ) from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise CheckpointError(
            f"{spec} is not in the Hugging Face cache and could not be downloaded ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}); check the network, or run `{download_hint(spec)}`"
        ) from None
