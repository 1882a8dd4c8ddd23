"""Packs a trained demo model into the package: src/gptoss/demo/demo.safetensors (the compact form: used
vocabulary rows only, experts as MXFP4) and demo.json (its sha256, what it is, the training summary).

    python scripts/package_demo.py WORKDIR [--out DIR]    (WORKDIR: scripts/train_demo.py's; its last phase is the
                                                          model; DIR: where the two files go, default the package)
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path
from typing import Any

from gptoss.demo import compact, recipe, shipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--out", type=Path, default=shipped.PACKAGE_FILE.parent)
    args = parser.parse_args()
    phases = [args.workdir / p.name for p in recipe.PHASES]
    package_file, manifest_file = args.out / shipped.PACKAGE_FILE.name, args.out / shipped.MANIFEST.name
    stored = compact.pack(phases[-1], package_file)
    curves = {
        p.name: [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        for p, folder in zip(recipe.PHASES, phases, strict=True)
    }
    manifest = {
        "sha256": compact.sha256(package_file),
        "what": "gptoss demo model: a tiny GPT-OSS trained from scratch on synthetic tasks (scripts/train_demo.py)",
        "bytes": stored["bytes"],
        "used_tokens": stored["used_tokens"],
        "expanded_sha256": stored["expanded_sha256"],
        "phases": {name: summary(rows) for name, rows in curves.items()},
    }
    manifest_file.write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest))


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A phase's metrics.jsonl in brief. A resumed phase logged the steps after its last checkpoint twice and
    restarted its clock: the later rows of a step win, and the seconds add up every stretch of training."""
    by_step = {r["step"]: r for r in rows}
    losses = [by_step[s]["loss"] for s in sorted(by_step)]
    restarts = [a["elapsed_s"] for a, b in itertools.pairwise(rows) if b["elapsed_s"] < a["elapsed_s"]]
    return {
        "steps": len(losses),
        "seconds": round(sum(restarts) + rows[-1]["elapsed_s"], 1),
        "last_loss": losses[-1],
        "mean_loss_per_100_steps": [
            round(statistics.fmean(losses[i : i + 100]), 4) for i in range(0, len(losses), 100)
        ],
    }


if __name__ == "__main__":
    main()
