"""Offline vocabulary: conversion from the quicktok wheel, the sha256 check, source order, the cache dir."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from gptoss.harmony import HarmonyError, vocab


@pytest.fixture()
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Private gptoss and tiktoken cache dirs, so only what a test puts there is found."""
    for key in ("GPTOSS_CACHE_DIR", "TIKTOKEN_CACHE_DIR", "TIKTOKEN_RS_CACHE_DIR"):
        monkeypatch.setenv(key, str(tmp_path / key.lower()))
    monkeypatch.delenv("TIKTOKEN_ENCODINGS_BASE", raising=False)
    return tmp_path


def test_prepared_file_has_the_reference_hash(vocab_dir: Path) -> None:
    data = (vocab_dir / "o200k_base.tiktoken").read_bytes()
    assert hashlib.sha256(data).hexdigest() == vocab.VOCAB_SHA256
    assert len(data) == 3_613_922 and data.count(b"\n") == 199_998


def test_quicktok_conversion_matches_the_hash() -> None:
    path = vocab.quicktok_vocab_path()
    assert path is not None
    assert vocab.sha256_hex(vocab.convert_quicktok(path.read_bytes())) == vocab.VOCAB_SHA256


def test_cold_cache_is_filled_from_quicktok(sandbox: Path, vocab_dir: Path) -> None:
    data, source = vocab.find_vocab_bytes()
    assert source.endswith("o200k.vocab")
    path = vocab.ensure_vocab_file()
    assert path == sandbox / "gptoss_cache_dir" / "o200k_base.tiktoken"
    assert path.read_bytes() == data == (vocab_dir / "o200k_base.tiktoken").read_bytes()


def test_tiktoken_cache_is_preferred(sandbox: Path, vocab_dir: Path) -> None:
    cached = next(vocab.tiktoken_cache_candidates())
    assert cached.parent == sandbox / "tiktoken_cache_dir"
    cached.parent.mkdir()
    cached.write_bytes((vocab_dir / "o200k_base.tiktoken").read_bytes())
    assert vocab.find_vocab_bytes()[1] == str(cached)


def test_tiktoken_rs_cache_is_used_too(sandbox: Path, vocab_dir: Path) -> None:
    rs = list(vocab.tiktoken_cache_candidates())[1]
    assert rs.name == "fb374d419588a4632f3f557e76b4b70aebbca790"  # sha1 of the OpenAI download URL
    rs.parent.mkdir()
    rs.write_bytes((vocab_dir / "o200k_base.tiktoken").read_bytes())
    assert vocab.find_vocab_bytes()[1] == str(rs)


def test_tiktoken_encodings_base_is_used_too(sandbox: Path, vocab_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_ENCODINGS_BASE", str(vocab_dir))
    assert vocab.find_vocab_bytes()[1] == str(vocab_dir / "o200k_base.tiktoken")


def test_wrong_files_are_skipped_and_replaced(sandbox: Path) -> None:
    cached = next(vocab.tiktoken_cache_candidates())
    cached.parent.mkdir()
    cached.write_bytes(b"not the vocabulary\n")
    mine = sandbox / "gptoss_cache_dir" / "o200k_base.tiktoken"
    mine.parent.mkdir()
    mine.write_bytes(b"corrupt")
    assert vocab.find_vocab_bytes()[1].endswith("o200k.vocab")
    assert vocab.sha256_hex(vocab.ensure_vocab_file().read_bytes()) == vocab.VOCAB_SHA256
    assert cached.read_bytes() == b"not the vocabulary\n"  # someone else's cache is never modified


def test_no_source_is_a_clear_error(sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vocab, "quicktok_vocab_path", lambda: None)
    with pytest.raises(HarmonyError, match="no o200k_base vocabulary found.*pip install quicktok-v1"):
        vocab.ensure_vocab_file()


def test_converted_file_with_wrong_hash_is_rejected(sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = sandbox / "o200k.vocab"
    fake.write_bytes(struct.pack("<IH", 1, 1) + b"a" + struct.pack("<I", 0))
    monkeypatch.setattr(vocab, "quicktok_vocab_path", lambda: fake)
    with pytest.raises(HarmonyError, match=f"o200k.vocab has sha256 .*, expected {vocab.VOCAB_SHA256}"):
        vocab.ensure_vocab_file()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack("<IH", 2, 1) + b"a" + struct.pack("<I", 0), "quicktok vocabulary is truncated"),
        (struct.pack("<IH", 1, 1) + b"a" + struct.pack("<I", 0) + b"xx", "quicktok vocabulary has 2 trailing bytes"),
    ],
)
def test_bad_quicktok_data(data: bytes, message: str) -> None:
    with pytest.raises(HarmonyError, match=message):
        vocab.convert_quicktok(data)


def test_conversion_sorts_by_rank() -> None:
    data = struct.pack("<I", 2) + struct.pack("<H", 1) + b"b" + struct.pack("<I", 1)
    data += struct.pack("<H", 1) + b"a" + struct.pack("<I", 0)
    assert vocab.convert_quicktok(data) == b"YQ== 0\nYg== 1\n"


def test_wrong_rank_count_is_rejected() -> None:
    with pytest.raises(HarmonyError, match="vocabulary has 1 ranks, expected 199998"):
        vocab.parse_tiktoken(b"YQ== 0\n")


def test_unwritable_cache_dir(sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = sandbox / "file"
    blocker.write_text("x")
    monkeypatch.setenv("GPTOSS_CACHE_DIR", str(blocker / "sub"))
    with pytest.raises(HarmonyError, match="cannot write the vocabulary cache .*set GPTOSS_CACHE_DIR"):
        vocab.ensure_vocab_file()


def test_default_cache_dir_is_the_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv("GPTOSS_CACHE_DIR")
    assert vocab.cache_dir() == Path(platformdirs.user_cache_dir("gptoss"))
