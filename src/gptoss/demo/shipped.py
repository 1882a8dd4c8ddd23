"""The demo model shipped in the package: a compact file plus its manifest, expanded on first use.

`demo.safetensors` (gptoss.demo.compact's format) and `demo.json` (its sha256, the training run's summary) sit in
this package. The first `gptoss serve` / `chat` without `--model` expands them into the user data directory, in a
folder named by the sha256 (a new release gets a new folder), and uses that folder from then on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import platformdirs

from gptoss.demo.compact import CompactError, expand

PACKAGE_FILE = Path(__file__).with_name("demo.safetensors")
MANIFEST = Path(__file__).with_name("demo.json")


def manifest(path: Path = MANIFEST) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CompactError(f"{path}: the demo model's manifest is unreadable ({e}); reinstall gptoss") from None
    if not isinstance(data, dict) or not isinstance(data.get("sha256"), str):
        raise CompactError(f"{path}: the demo model's manifest has no 'sha256'; reinstall gptoss")
    return data


def available(package_file: Path = PACKAGE_FILE, manifest_file: Path = MANIFEST) -> bool:
    return package_file.exists() and manifest_file.exists()


def demo_dir(sha256: str, root: Path | None = None) -> Path:
    base = root or Path(platformdirs.user_data_dir("gptoss"))
    return base / f"demo-{sha256[:12]}"


def ensure_demo(
    package_file: Path = PACKAGE_FILE, manifest_file: Path = MANIFEST, root: Path | None = None
) -> tuple[Path, bool]:
    """(the expanded checkpoint folder, whether it was expanded now); the file's sha256 is checked first."""
    sha = manifest(manifest_file)["sha256"]
    out = demo_dir(sha, root)
    if (out / "config.json").exists():
        return out, False
    return expand(package_file, out, sha), True
