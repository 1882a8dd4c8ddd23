"""Find, convert, verify and cache `o200k_base.tiktoken`, the BPE ranks under o200k_harmony, without network.

Sources, in order: our own cache; the tiktoken caches (Python `tiktoken` and the Rust `tiktoken-rs` one that
openai-harmony uses), which hold the file under the sha1 of its download URL, and `$TIKTOKEN_ENCODINGS_BASE`
(openai-harmony's offline setting); and last the vocabulary that the
`quicktok-v1` wheel ships in a binary form, which we convert. Whatever the source, the bytes must hash to
`VOCAB_SHA256`: that hash, not the source, is what makes the file OpenAI's. The verified file is written to
`$GPTOSS_CACHE_DIR` (else the platformdirs user cache dir) so later loads are a read and a hash.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gptoss.harmony.errors import HarmonyError

VOCAB_FILENAME = "o200k_base.tiktoken"
VOCAB_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
VOCAB_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
N_RANKS = 199_998
QUICKTOK_DIST = "quicktok-v1"
QUICKTOK_VOCAB = "quicktok/data/o200k.vocab"


def cache_dir() -> Path:
    """Where gptoss keeps its verified vocabulary: `$GPTOSS_CACHE_DIR`, else the user cache dir."""
    override = os.environ.get("GPTOSS_CACHE_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("gptoss"))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tiktoken_cache_candidates() -> Iterator[Path]:
    """The files the tiktoken caches would hold (named by the sha1 of the download URL), then the directory
    openai-harmony users point `TIKTOKEN_ENCODINGS_BASE` at."""
    key = hashlib.sha1(VOCAB_URL.encode()).hexdigest()
    tmp = Path(tempfile.gettempdir())
    py_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    yield (Path(py_dir) if py_dir else tmp / "data-gym-cache") / key
    rs_dir = os.environ.get("TIKTOKEN_RS_CACHE_DIR")
    yield (Path(rs_dir) if rs_dir else tmp / "tiktoken-rs-cache") / key
    base = os.environ.get("TIKTOKEN_ENCODINGS_BASE")
    if base:
        yield Path(base) / VOCAB_FILENAME


def quicktok_vocab_path() -> Path | None:
    """The quicktok wheel's o200k vocabulary, found through package metadata so quicktok itself is not imported."""
    try:
        dist = importlib.metadata.distribution(QUICKTOK_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(QUICKTOK_VOCAB)))
    return path if path.is_file() else None


def convert_quicktok(data: bytes) -> bytes:
    """quicktok `.vocab` (LE `u32 count`, then `{u16 len; bytes; u32 rank}` records) -> `.tiktoken` text form."""
    try:
        (count,) = struct.unpack_from("<I", data, 0)
        offset, ranked = 4, []
        for _ in range(count):
            (n,) = struct.unpack_from("<H", data, offset)
            token = data[offset + 2 : offset + 2 + n]
            (rank,) = struct.unpack_from("<I", data, offset + 2 + n)
            ranked.append((rank, token))
            offset += 6 + n
    except struct.error as e:
        raise HarmonyError(f"quicktok vocabulary is truncated: {e}") from e
    if offset != len(data):
        raise HarmonyError(f"quicktok vocabulary has {len(data) - offset} trailing bytes")
    ranked.sort()
    return b"".join(base64.b64encode(tok) + b" %d\n" % rank for rank, tok in ranked)


def read_verified(path: Path) -> bytes | None:
    """The file's bytes if it exists and hashes to VOCAB_SHA256, else None (a wrong file is skipped, not fatal)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if sha256_hex(data) == VOCAB_SHA256 else None


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file and rename, so parallel test workers never see a half-written vocabulary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def find_vocab_bytes() -> tuple[bytes, str]:
    """The verified vocabulary from the first source that has it, and a name for that source."""
    for candidate in tiktoken_cache_candidates():
        data = read_verified(candidate)
        if data is not None:
            return data, str(candidate)
    qt = quicktok_vocab_path()
    if qt is None:
        raise HarmonyError(
            f"no o200k_base vocabulary found: not in the tiktoken caches and the {QUICKTOK_DIST} package "
            f"is not installed (pip install {QUICKTOK_DIST})"
        )
    data = convert_quicktok(qt.read_bytes())
    digest = sha256_hex(data)
    if digest != VOCAB_SHA256:
        raise HarmonyError(f"vocabulary converted from {qt} has sha256 {digest}, expected {VOCAB_SHA256}")
    return data, str(qt)


def verified_vocab() -> tuple[Path, bytes]:
    """A verified `o200k_base.tiktoken` in the gptoss cache dir (prepared on first use), and its bytes."""
    path = cache_dir() / VOCAB_FILENAME
    data = read_verified(path)
    if data is None:
        data, _source = find_vocab_bytes()
        try:
            write_atomic(path, data)
        except OSError as e:
            raise HarmonyError(f"cannot write the vocabulary cache {path}: {e} (set GPTOSS_CACHE_DIR)") from e
    return path, data


def ensure_vocab_file() -> Path:
    """Path of a verified `o200k_base.tiktoken`; point `TIKTOKEN_ENCODINGS_BASE` at its directory for openai-harmony."""
    return verified_vocab()[0]


def parse_tiktoken(data: bytes) -> dict[bytes, int]:
    """`base64(token) SP rank LF` lines -> mergeable ranks."""
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != N_RANKS:
        raise HarmonyError(f"vocabulary has {len(ranks)} ranks, expected {N_RANKS}")
    return ranks
