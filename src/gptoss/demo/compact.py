"""A checkpoint with a sparse vocabulary stored compactly, and expanded back to a normal checkpoint folder.

A model trained with `--sparse-vocab` has zero embedding and unembedding rows for every token its data never used
(nearly all of o200k_harmony's 201,088). The compact file (one safetensors file) keeps only the used rows with
their token ids, every other tensor exactly as the official layout has it (experts as MXFP4 blocks and scales),
the config in its metadata and the sha256 of the expanded `model.safetensors`. Expanding writes config.json +
model.safetensors to a side folder, checks that sha256 and renames the folder into place, so a corrupt file or an
interrupted expansion never leaves a checkpoint that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gptoss.errors import InputError

VOCAB_ROWS = ("model.embed_tokens.weight", "lm_head.weight")
USED = "compact.used_tokens"
FORMAT = "gptoss-compact-v1"


class CompactError(InputError):
    """A compact checkpoint that cannot be expanded (corrupt, truncated, not this format); the message says which."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def pack(checkpoint: Path, out: Path) -> dict[str, str | int]:
    """Writes the compact form of an HF-layout checkpoint folder; returns what it stored."""
    tensors = load_file(str(checkpoint / "model.safetensors"))
    rows = [tensors[n].float().abs().sum(dim=1) > 0 for n in VOCAB_ROWS]
    used = (rows[0] | rows[1]).nonzero().squeeze(1)
    compact = {n: t for n, t in tensors.items() if n not in VOCAB_ROWS}
    compact |= {n: tensors[n][used].contiguous() for n in VOCAB_ROWS}
    compact[USED] = used.to(torch.int32)
    config = (checkpoint / "config.json").read_text()
    expanded = sha256(checkpoint / "model.safetensors")
    meta = {"format": FORMAT, "config": config, "vocab_size": str(tensors[VOCAB_ROWS[0]].shape[0])}
    save_file(compact, str(out), metadata=meta | {"expanded_sha256": expanded})
    return {"used_tokens": int(used.numel()), "expanded_sha256": expanded, "bytes": out.stat().st_size}


def read_compact(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (OSError, SafetensorError, ValueError) as e:
        raise CompactError(f"{path}: not a readable compact checkpoint ({e})") from None
    if meta.get("format") != FORMAT or USED not in tensors:
        raise CompactError(f"{path}: not a {FORMAT} file (format {meta.get('format')!r})")
    return tensors, meta


def expand_tensors(tensors: dict[str, torch.Tensor], vocab_size: int) -> dict[str, torch.Tensor]:
    used = tensors.pop(USED).long()
    for name in VOCAB_ROWS:
        rows = tensors[name]
        full = torch.zeros((vocab_size, rows.shape[1]), dtype=rows.dtype)
        full[used] = rows
        tensors[name] = full
    return tensors


def expand(path: Path, out: Path, expected_sha256: str | None = None) -> Path:
    """Expands the compact file at `path` into the checkpoint folder `out` (unless it is there already).
    `expected_sha256`: of the compact file itself (the package records it), checked before anything is written."""
    if (out / "config.json").exists():
        return out
    if expected_sha256 is not None and (actual := sha256(path)) != expected_sha256:
        raise CompactError(f"{path}: sha256 {actual} differs from the recorded {expected_sha256}: the file is corrupt")
    tensors, meta = read_compact(path)
    partial = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    weights = partial / "model.safetensors"
    save_file(expand_tensors(tensors, int(meta["vocab_size"])), str(weights), metadata={"format": "pt"})
    if sha256(weights) != meta["expanded_sha256"]:
        shutil.rmtree(partial, ignore_errors=True)
        raise CompactError(f"{path}: the expanded weights do not match their recorded sha256: the file is corrupt")
    (partial / "config.json").write_text(meta["config"])
    (partial / "compact.json").write_text(json.dumps({"source": str(path), "sha256": meta["expanded_sha256"]}) + "\n")
    try:
        partial.rename(out)
    except OSError:  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)
    return out
