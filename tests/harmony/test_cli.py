"""`gptoss render` and `gptoss tokenize`."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

import gptoss.harmony as gh
from gptoss.cli.__main__ import main
from gptoss.harmony import HarmonyEncoding

CONVERSATION = {
    "messages": [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "Easy.", "channel": "analysis"},
        {"role": "assistant", "content": "4", "channel": "final"},
    ]
}


@pytest.fixture()
def conv_file(tmp_path: Path) -> Path:
    path = tmp_path / "conv.json"
    path.write_text(json.dumps(CONVERSATION))
    return path


def expected(enc: HarmonyEncoding, mode: str, drop: bool = True) -> list[int]:
    conversation = gh.Conversation.from_dict(CONVERSATION)
    config = gh.RenderConversationConfig(auto_drop_analysis=drop)
    if mode == "completion":
        return enc.render_conversation_for_completion(conversation, gh.Role.ASSISTANT, config)
    if mode == "training":
        return enc.render_conversation_for_training(conversation, config)
    return enc.render_conversation(conversation, config)


@pytest.mark.parametrize("mode", ["completion", "training", "plain"])
def test_render_prints_text_and_ids(
    conv_file: Path, enc: HarmonyEncoding, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    assert main(["render", str(conv_file), "--mode", mode]) == 0
    text, count, ids = capsys.readouterr().out.rsplit("\n", 3)[:3]
    tokens = expected(enc, mode)
    assert text == enc.decode_utf8(tokens) and "Easy." not in text  # completed turn: its analysis is dropped
    assert count == f"--- {len(tokens)} tokens ---"
    assert [int(t) for t in ids.split(",")] == tokens


def test_render_json_and_options(
    conv_file: Path, enc: HarmonyEncoding, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["render", str(conv_file), "--json", "--keep-analysis", "--next-role", "user"]) == 0
    out = json.loads(capsys.readouterr().out)
    conversation = gh.Conversation.from_dict(CONVERSATION)
    keep = gh.RenderConversationConfig(auto_drop_analysis=False)
    assert out["tokens"] == enc.render_conversation_for_completion(conversation, gh.Role.USER, keep)
    assert "Easy." in out["text"]
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(CONVERSATION["messages"])))  # a bare list, from stdin
    assert main(["render", "-", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == expected(enc, "completion")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read .*missing.json: No such file or directory"),
        ("{not json", "missing.json is not valid JSON: Expecting property name"),
        ('{"messages": [{"role": "bot", "content": "x"}]}', r"messages\[0\]\.role: unknown role 'bot'"),
        ('{"messages": [{"role": "user", "content": "x", "channel": "fnal"}]}', r"messages\[0\]\.channel: unknown"),
    ],
)
def test_render_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str) -> None:
    path = tmp_path / "missing.json"
    if content is not None:
        path.write_text(content)
    assert main(["render", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gptoss render: error: ")
    assert re.search(message, err), err


def test_render_file_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"messages": [{"role": "user", "content": "caf\xe9"}]}')
    assert main(["render", str(path)]) == 2
    assert re.search(r"gptoss render: error: .*latin1\.json is not UTF-8 text", capsys.readouterr().err)


def test_tokenize_argument_and_stdin(
    enc: HarmonyEncoding, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["tokenize", "hello world"]) == 0
    assert capsys.readouterr().out == "24912,2375\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("hello world\n"))
    assert main(["tokenize"]) == 0
    assert capsys.readouterr().out == "24912,2375\n"


def test_tokenize_special_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tokenize", "<|start|>user"]) == 0
    assert capsys.readouterr().out == "27,91,5236,91,29,1428\n"  # as text by default, like rendered content
    assert main(["tokenize", "--special", "<|start|>user"]) == 0
    assert capsys.readouterr().out == "200006,1428\n"


def test_tokenize_decode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tokenize", "--decode", "200006, 1428 200008"]) == 0
    assert capsys.readouterr().out == "<|start|>user<|message|>\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--decode", "1,x"], "token ids must be integers separated by commas or spaces, got '1,x'"),
        (["--decode", " , "], "no token ids given"),
        (["--decode", "5,201089"], r"token id 201089 is outside the o200k_harmony vocabulary \(0\.\.201088\)"),
    ],
)
def test_tokenize_errors(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["tokenize", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gptoss tokenize: error: ")
    assert re.search(message, err), err
