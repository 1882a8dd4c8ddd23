"""Harmony fixtures: the vocabulary gptoss prepares (in a private cache dir), both encodings, and openai-harmony
pointed at that same verified file through TIKTOKEN_ENCODINGS_BASE, so the oracle runs offline."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from gptoss.harmony import HarmonyEncoding, HarmonyEncodingName, ensure_vocab_file, load_harmony_encoding

ENV_KEYS = ("GPTOSS_CACHE_DIR", "TIKTOKEN_ENCODINGS_BASE")


@pytest.fixture(scope="session", autouse=True)
def vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A verified o200k_base.tiktoken that gptoss itself prepared; never the user's real cache dir."""
    saved = {key: os.environ.get(key) for key in ENV_KEYS}
    os.environ["GPTOSS_CACHE_DIR"] = str(tmp_path_factory.mktemp("gptoss-cache"))
    path = ensure_vocab_file()
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(path.parent)
    yield path.parent
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def enc(vocab_dir: Path) -> HarmonyEncoding:
    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


@pytest.fixture(scope="session")
def oh(vocab_dir: Path) -> ModuleType:
    """The openai_harmony module (the oracle)."""
    import openai_harmony

    return openai_harmony


@pytest.fixture(scope="session")
def oh_enc(oh: ModuleType) -> object:
    return oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)
