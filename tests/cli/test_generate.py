from __future__ import annotations

from pathlib import Path

import pytest

from gptoss.cli.__main__ import main


def test_generate_prints_ids(tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "generate",
        "--model",
        str(tiny_dir),
        "--tokens",
        "1,2,3",
        "--max-tokens",
        "5",
        "--temperature",
        "0",
    ]
    assert main(args) == 0
    ids = [int(t) for t in capsys.readouterr().out.strip().split(",")]
    assert len(ids) == 5 and all(0 <= t < 1024 for t in ids)
    assert main([*args, "--dtype", "fp32"]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tokens", "1,x"], "--tokens must be comma-separated integers, got '1,x'"),
        (["--tokens", "1,99999"], "token id 99999 at index 1 is outside the vocabulary"),
        (["--tokens", "1", "--top-p", "0"], "top_p must be in"),
    ],
)
def test_generate_errors(tiny_dir: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    assert main(["generate", "--model", str(tiny_dir), "--tokens", "1", *extra]) == 2
    assert message in capsys.readouterr().err


def test_generate_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--model", str(tmp_path / "nope"), "--tokens", "1"]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_generate_with_a_schema(tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from gptoss.server.generation import harmony
    from tests.engine.checkpoints import tiny_random_home

    model = tiny_random_home(tmp_path_factory) / "gptoss" / "tiny-random"
    schema = tmp_path_factory.mktemp("schema") / "s.json"
    schema.write_text(
        json.dumps({"type": "object", "properties": {"ok": {"type": "boolean"}}, "additionalProperties": False})
    )
    prompt = harmony().encode("<|start|>user<|message|>hi<|end|><|start|>assistant", allowed_special="all")
    argv = ["generate", "--model", str(model), "--tokens", ",".join(map(str, prompt)), "--schema", str(schema)]
    assert main([*argv, "--max-tokens", "40", "--max-reasoning-tokens", "3", "--seed", "2"]) == 0
    text = harmony().decode([int(t) for t in capsys.readouterr().out.strip().split(",")])
    assert text.endswith("<|return|>") and "<|channel|>final<|message|>" in text
    assert set(json.loads(text.split("<|message|>")[-1].removesuffix("<|return|>"))) <= {"ok"}
    assert main([*argv, "--max-reasoning-tokens", "-1"]) == 2
    assert "--max-reasoning-tokens must be >= 0, got -1" in capsys.readouterr().err
