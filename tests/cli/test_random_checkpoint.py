from __future__ import annotations

from pathlib import Path

import pytest

from gptoss.cli.__main__ import main
from gptoss.weights import open_checkpoint


def test_writes_both_layouts(tmp_path: Path) -> None:
    out = tmp_path / "ck"
    assert main(["random-checkpoint", "--preset", "tiny", "--out", str(out), "--layout", "both"]) == 0
    assert open_checkpoint(out).layout == "hf" and open_checkpoint(out / "original").layout == "original"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "7b"], "unknown preset '7b'"),
        (["--shard-gb", "0"], "--shard-gb must be positive"),
    ],
)
def test_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["random-checkpoint", "--out", str(tmp_path / "x"), *args]) == 2
    assert message in capsys.readouterr().err


def test_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    assert main(["random-checkpoint", "--out", str(tmp_path)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "precious"
