"""Packs a trained demo model into the package: src/gptoss/demo/demo.safetensors (the compact form: used
vocabulary rows only, experts as MXFP4) and demo.json (its sha256, what it is, the training summary).

    python scripts/package_demo.py WORKDIR    (WORKDIR: scripts/train_demo.py's; its last phase is the model)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gptoss.demo import compact, recipe, shipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path)
    args = parser.parse_args()
    phases = [args.workdir / p.name for p in recipe.PHASES]
    stored = compact.pack(phases[-1], shipped.PACKAGE_FILE)
    curves = {
        p.name: [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        for p, folder in zip(recipe.PHASES, phases, strict=True)
    }
    manifest = {
        "sha256": compact.sha256(shipped.PACKAGE_FILE),
        "what": "gptoss demo model: a tiny GPT-OSS trained from scratch on synthetic tasks (scripts/train_demo.py)",
        "bytes": stored["bytes"],
        "used_tokens": stored["used_tokens"],
        "expanded_sha256": stored["expanded_sha256"],
        "phases": {
            name: {"steps": len(rows), "last_loss": rows[-1]["loss"], "seconds": rows[-1].get("elapsed_s")}
            for name, rows in curves.items()
        },
    }
    shipped.MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest))


if __name__ == "__main__":
    main()
