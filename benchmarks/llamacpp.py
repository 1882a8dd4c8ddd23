"""llama.cpp (through llama-cpp-python) on the same random weights as gptoss, converted to GGUF: bench_cpu's peer half.

    python -m benchmarks.llamacpp prepare [--preset 20b]          # write the GGUF once, cached beside the checkpoint
    python -m benchmarks.llamacpp run --gguf PATH [--threads N] [--prompt-tokens 512] [--decode-tokens 128]

`prepare` gives the cached random HF checkpoint an o200k_harmony `tokenizer.json` (in an overlay directory whose
shards are symlinks, so nothing is copied) and runs llama.cpp's own `convert_hf_to_gguf.py` from the
llama-cpp-python sdist: experts stay MXFP4, the other matrices bf16, norms and biases f32, as it converts the official
checkpoint. `run` is meant to be a process of its own, so its peak RSS is llama.cpp's alone. It loads with weight
repacking off (`use_extra_bufts=False`): the CPU repack copies the experts into anonymous memory (+9.7 GB on the 20b,
23 GB RSS in all on a 23 GiB machine) and was slower here (cpu-measurements.md §5). The prompt is the same random ids
that bench_reference feeds gptoss; decode is greedy (argmax), like gptoss's. Last line of `run`: one JSON object.

llama-cpp-python is an optional benchmark dependency, built from source (see the README's CPU benchmark section).
This module is `llamacpp`, not `llama_cpp`, so that it can never shadow the `llama_cpp` package it imports.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, cpu_model, emit, peak_rss_gb, random_checkpoint, rss_gb

DIST = "llama-cpp-python"
INSTALL_HINT = (
    'CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF '
    '-DLLAMA_BUILD_TESTS=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 pip install --no-binary llama-cpp-python '
    "llama-cpp-python==0.3.36"
)
GGUF_NAME = "model.gguf"


def installed_version() -> str | None:
    """llama-cpp-python's version if it is installed (found by metadata; importing it loads the shared library)."""
    try:
        return importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        return None


def sdist_dir(version: str) -> Path:
    """The unpacked llama-cpp-python sdist of `version`: its vendor/llama.cpp holds the HF -> GGUF converter.

    The installed wheel does not ship the converter, so the sdist is fetched with pip once and cached.
    """
    root = CACHE / "llama-sdist"
    unpacked = root / f"llama_cpp_python-{version}"
    if (unpacked / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py").is_file():
        return unpacked
    archive = root / f"llama_cpp_python-{version}.tar.gz"
    if not archive.is_file():
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*pip, f"{DIST}=={version}", "-d", str(root)], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return unpacked


def write_tokenizer(out: Path, vocab_size: int, eos_token_id: int, pad_token_id: int) -> None:
    """o200k_harmony as a Hugging Face `tokenizer.json` + `tokenizer_config.json`, built offline.

    The BPE ranks are gptoss's verified o200k_base (harmony/vocab.py); the special tokens are harmony's, in id order
    so the converter assigns each its own id. Ids >= vocab_size (`<|reserved_201088|>`) are left out, since the
    converter requires every token id to be below the model's vocab_size.
    """
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from gptoss.harmony import tokenizer as harmony_tokenizer
    from gptoss.harmony import vocab

    if vocab_size < harmony_tokenizer.LAST_SPECIAL:
        raise SystemExit(f"vocab_size {vocab_size} cannot hold o200k_harmony; use a preset with the real vocabulary")
    vocab_path = vocab.ensure_vocab_file()
    specials = sorted(
        ((token_id, name) for name, token_id in harmony_tokenizer.special_tokens().items() if token_id < vocab_size)
    )
    first = specials[0][0]
    if [token_id for token_id, _ in specials] != list(range(first, first + len(specials))):
        raise RuntimeError("harmony special token ids are not contiguous; the converter would misnumber them")
    converter = TikTokenConverter(
        vocab_file=str(vocab_path),
        pattern=harmony_tokenizer.PAT_STR,
        extra_special_tokens=[name for _, name in specials],
    )
    tok = converter.converted()
    for token_id, name in specials:
        if tok.token_to_id(name) != token_id:
            raise RuntimeError(f"tokenizer.json gives {name} id {tok.token_to_id(name)}, expected {token_id}")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    id_to_name = dict(specials)
    fast.eos_token = id_to_name[eos_token_id]
    fast.pad_token = id_to_name[pad_token_id]
    fast.save_pretrained(str(out))
    # Cross-check against gptoss's own tokenizer (tiktoken) on text with specials.
    text = "<|start|>user<|message|>Hello, 世界! 12345 don't<|end|>"
    ours = harmony_tokenizer.o200k_harmony().encode(text, allowed_special="all")
    if fast.encode(text, add_special_tokens=False) != ours:
        raise RuntimeError("tokenizer.json disagrees with gptoss's o200k_harmony on a test string")


def overlay(hf_dir: Path, out: Path) -> None:
    """`out` = `hf_dir` (symlinked, not copied) plus the tokenizer files the converter needs."""
    out.mkdir(parents=True, exist_ok=True)
    for src in hf_dir.iterdir():
        if src.name.startswith("."):
            continue
        link = out / src.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(src.resolve())
    config = json.loads((hf_dir / "config.json").read_text())
    # The official config.json's ids (<|return|>, <|endoftext|>), for presets whose config leaves them out.
    eos, pad = config.get("eos_token_id", 200002), config.get("pad_token_id", 199999)
    write_tokenizer(out, config["vocab_size"], eos, pad)


def gguf_path(preset: str) -> Path:
    return CACHE / f"random-{preset}-gguf" / GGUF_NAME


def prepare(preset: str) -> Path:
    """The GGUF of the cached random `preset` checkpoint, converted once (a `.complete` marker records how)."""
    out = gguf_path(preset)
    done = out.parent / ".complete"
    if done.exists() and out.is_file():
        return out
    version = installed_version()
    if version is None:
        raise SystemExit(f"{DIST} is not installed; install it with:\n  {INSTALL_HINT}")
    hf_dir = random_checkpoint(preset)
    src = CACHE / f"random-{preset}-hf-with-tokenizer"
    print(f"writing o200k_harmony tokenizer.json into {src} (shards symlinked) ...", file=sys.stderr, flush=True)
    t = time.perf_counter()
    overlay(hf_dir, src)
    tok_s = time.perf_counter() - t
    script = sdist_dir(version) / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".gguf.partial")
    print(f"converting to GGUF with {script} ...", file=sys.stderr, flush=True)
    t = time.perf_counter()
    # bf16 is what the converter's "auto" picks for the official checkpoint (its dense tensors are bf16).
    cmd = [sys.executable, str(script), str(src), "--outfile", str(tmp), "--outtype", "bf16"]
    subprocess.run(cmd, check=True, cwd=script.parent)
    types = tensor_types(tmp)
    tmp.replace(out)
    convert_s = time.perf_counter() - t
    info = {"llama_cpp_python": version, "tokenizer_s": tok_s, "convert_s": convert_s, "tensor_types": types}
    done.write_text(json.dumps(info) + "\n")
    return out


def tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each GGML type the GGUF holds; fails unless every expert matrix is MXFP4."""
    import gguf

    counts: dict[str, int] = {}
    for tensor in gguf.GGUFReader(path).tensors:
        kind = tensor.tensor_type.name
        counts[kind] = counts.get(kind, 0) + 1
        if tensor.name.endswith("_exps.weight") and kind != "MXFP4":
            raise RuntimeError(f"{path}: expert tensor {tensor.name} is {kind}, expected MXFP4")
    return counts


def rss_anon_gb() -> float:
    """Anonymous resident memory: file-backed mmap pages excluded, so a repack copy of the weights would show here."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def load_no_repack(path: Path, n_ctx: int, threads: int) -> Any:
    """`Llama(path)` with weight repacking off. Llama() does not expose `use_extra_bufts`, so the default-params
    function it calls is wrapped for the duration of the load."""
    import llama_cpp
    from llama_cpp import llama_cpp as lib

    default = lib.llama_model_default_params

    def no_repack() -> Any:
        params = default()
        params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = no_repack
    try:
        return llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=512,
            n_ubatch=512,
            n_threads=threads,
            n_threads_batch=threads,
            use_mmap=True,
            logits_all=False,
            verbose=False,
        )
    finally:
        lib.llama_model_default_params = default


def last_logits_argmax(llm: Any) -> int:
    import numpy as np
    from llama_cpp import llama_cpp as lib

    logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))
    return int(logits.argmax())


def run(path: Path, threads: int, prompt_tokens: int, decode_tokens: int) -> dict[str, object]:
    import torch

    t = time.perf_counter()
    llm = load_no_repack(path, n_ctx=prompt_tokens + decode_tokens + 1, threads=threads)
    load_s = time.perf_counter() - t
    rss_after_load, anon_after_load = rss_gb(), rss_anon_gb()
    vocab = llm.n_vocab()
    # The same ids bench_reference gives gptoss.
    prompt = torch.randint(0, vocab, (prompt_tokens,), generator=torch.Generator().manual_seed(0)).tolist()

    t = time.perf_counter()
    llm.eval(prompt)
    token = last_logits_argmax(llm)
    prefill_s = time.perf_counter() - t

    generated = [token]  # greedy output, prefill's token first; gptoss on the same weights gives the same ids
    step_s = []
    for _ in range(decode_tokens):
        t = time.perf_counter()
        llm.eval([token])
        token = last_logits_argmax(llm)
        step_s.append(time.perf_counter() - t)
        generated.append(token)
    decode_s = sum(step_s)
    step_ms = sorted(1e3 * s for s in step_s)

    return {
        "benchmark": "llama_cpp",
        "llama_cpp_python": installed_version(),
        "gguf": str(path),
        "gguf_gb": round(path.stat().st_size / 1e9, 2),
        "repack": False,
        "threads": threads,
        "cpu": cpu_model(),
        "load_s": round(load_s, 2),
        "rss_after_load_gb": round(rss_after_load, 2),
        "rss_anon_after_load_gb": round(anon_after_load, 2),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "prefill_tokens": prompt_tokens,
        "prefill_tok_s": round(prompt_tokens / prefill_s, 3),
        "decode_tokens": decode_tokens,
        "decode_tok_s": round(decode_tokens / decode_s, 4),
        "decode_ms_median": round(step_ms[len(step_ms) // 2], 1),
        "decode_ms_max": round(step_ms[-1], 1),
        "first_tokens": generated[:8],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prepare", help="write the GGUF (once) and print its path")
    prep.add_argument("--preset", default="20b")
    r = sub.add_parser("run", help="load, prefill, greedy decode; last line one JSON object")
    r.add_argument("--gguf", type=Path, default=None, help="default: the prepared GGUF of --preset")
    r.add_argument("--preset", default="20b")
    r.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    r.add_argument("--prompt-tokens", type=int, default=512)
    r.add_argument("--decode-tokens", type=int, default=128)
    args = p.parse_args()
    if installed_version() is None:
        print(f"{DIST} is not installed; install it with:\n  {INSTALL_HINT}", file=sys.stderr)
        raise SystemExit(3)
    if args.cmd == "prepare":
        print(json.dumps({"gguf": str(prepare(args.preset))}))
        return
    path = args.gguf or prepare(args.preset)
    result = run(path, args.threads, args.prompt_tokens, args.decode_tokens)
    emit([(k, str(v)) for k, v in result.items()], result)


if __name__ == "__main__":
    main()
