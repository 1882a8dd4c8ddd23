"""scripts/train_demo.py and scripts/package_demo.py end to end (two steps a phase), and the manifest's summary of
a resumed phase."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gptoss.demo import recipe, shipped
from gptoss.weights import open_checkpoint

SCRIPTS = Path(__file__).parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))
from package_demo import summary  # noqa: E402


@pytest.mark.slow
def test_train_then_package_gives_a_package_that_expands_to_the_trained_model(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "package"
    out.mkdir()
    run = [sys.executable, str(SCRIPTS / "train_demo.py"), str(work), "--max-steps", "2"]
    subprocess.run(run, check=True, capture_output=True, timeout=600)
    again = subprocess.run(run, check=True, capture_output=True, text=True, timeout=600)
    assert [f"phase {p.name}: already trained" in again.stdout for p in recipe.PHASES] == [True] * 3
    subprocess.run([sys.executable, str(SCRIPTS / "package_demo.py"), str(work), "--out", str(out)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    package, manifest = out / shipped.PACKAGE_FILE.name, out / shipped.MANIFEST.name
    facts = shipped.manifest(manifest)
    assert {p: facts["phases"][p]["steps"] for p in ("copy", "tasks", "polish")} == dict.fromkeys(
        ("copy", "tasks", "polish"), 2
    )
    folder, expanded = shipped.ensure_demo(package, manifest, tmp_path / "data")
    assert expanded and folder.name == f"demo-{facts['sha256'][:12]}"
    assert (folder / "model.safetensors").read_bytes() == (work / "polish" / "model.safetensors").read_bytes()
    open_checkpoint(folder)


def test_a_resumed_phase_is_summarised_once_per_step_with_every_stretch_of_time() -> None:
    rows = [{"step": s, "loss": float(s), "elapsed_s": 10.0 * s} for s in range(1, 5)]  # stopped after step 4
    rows += [{"step": s, "loss": s + 0.5, "elapsed_s": 10.0 * (s - 2)} for s in range(3, 6)]  # resumed from 2
    brief = summary(rows)
    assert brief["steps"] == 5 and brief["last_loss"] == 5.5 and brief["seconds"] == 70.0
    assert brief["mean_loss_per_100_steps"] == [round((1 + 2 + 3.5 + 4.5 + 5.5) / 5, 4)]
    assert json.loads(json.dumps(brief)) == brief
