"""gptoss against llama.cpp on one CPU, same random gpt-oss weights, same prompt, same run.

    python -m benchmarks.bench_cpu [--preset 20b] [--threads N] [--prompt-tokens 512] [--decode-tokens 128]

Needs the optional llama-cpp-python, built from source (README, "CPU benchmark: gptoss vs llama.cpp"); without it this
says so and exits 2. Steps: the cached random checkpoint of the preset's real shapes (benchmarks/common.py) and its
GGUF conversion (benchmarks/llamacpp.py, once); read bandwidth (benchmarks/bandwidth.py); then each engine in a
process of its own, so each peak RSS is its own: llama.cpp (repack off) and gptoss (`gptoss bench`). Both get the
same 512 random prompt ids (seed 0) and decode greedily. Before each engine its weight files are read once, so both
load from a warm page cache: the two copies (HF safetensors and GGUF, 13.8 GB each for 20b) do not fit in RAM
together, and whichever ran last would otherwise have the advantage. Bandwidth is measured at the start and at the end
(the machine may be shared); the decode ceiling uses the better one. Prints a table, then one JSON object as the
last line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import bandwidth, llamacpp
from benchmarks.common import cpu_model, random_checkpoint

# The gptoss half: `gptoss bench` (src/gptoss/cli/bench.py, the measurement bench_reference also uses), last line JSON.
GPTOSS_CMD = [sys.executable, "-m", "gptoss", "bench", "--json"]
RATIO_KEYS = {
    "prefill": "prefill_tok_s",
    "decode": "decode_tok_s",
    "load": "load_s",
    "first_token": "first_token_s",
    "peak_rss": "peak_rss_gb",
}


def busy_processes(interval: float = 1.0, min_cpu: float = 0.1) -> list[str]:
    """Other processes using at least `min_cpu` of a core over `interval` seconds: the contention this run sees."""

    def cpu_ticks() -> dict[int, tuple[str, int]]:
        ticks = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                stat = (d / "stat").read_text()
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            ticks[int(d.name)] = (cmd[:100] or stat.split("(", 1)[1].split(")")[0], int(fields[11]) + int(fields[12]))
        return ticks

    hz = os.sysconf("SC_CLK_TCK")
    before = cpu_ticks()
    time.sleep(interval)
    after = cpu_ticks()
    busy = []
    for pid, (cmd, t1) in after.items():
        if pid in before and (share := (t1 - before[pid][1]) / hz / interval) >= min_cpu:
            busy.append(f"pid {pid} {share:.0%} cpu: {cmd}")
    return busy


def warm(paths: list[Path]) -> float:
    """Reads `paths` once so an engine loads from the page cache; returns seconds spent."""
    t = time.perf_counter()
    buf = bytearray(64 << 20)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
    return time.perf_counter() - t


def run_half(name: str, cmd: list[str]) -> dict[str, Any]:
    """Runs one engine's benchmark process (its stderr passes through) and returns its last-line JSON."""
    print(f"--- {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    print(proc.stdout, file=sys.stderr, end="", flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} benchmark failed with exit status {proc.returncode}; no numbers reported")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.perf_counter() - t, 1)
    return result


def ratio(a: object, b: object) -> float | None:
    return round(float(a) / float(b), 4) if isinstance(a, int | float) and isinstance(b, int | float) and b else None


def fmt(v: object) -> str:
    return "-" if v is None else str(v)


def print_table(r: dict[str, Any], g: dict[str, Any], ll: dict[str, Any]) -> None:
    rat = r["ratio_gptoss_over_llama_cpp"]
    frac = r["fraction_of_ceiling"]
    rows = [
        ("load s (warm page cache)", g["load_s"], ll["load_s"], rat["load"]),
        ("load + prefill s (first token)", g["first_token_s"], ll["first_token_s"], rat["first_token"]),
        ("peak RSS GB", g["peak_rss_gb"], ll["peak_rss_gb"], rat["peak_rss"]),
        (f"prefill tok/s ({r['prompt_tokens']} tokens)", g["prefill_tok_s"], ll["prefill_tok_s"], rat["prefill"]),
        (f"decode tok/s ({r['decode_tokens']} tokens)", g["decode_tok_s"], ll["decode_tok_s"], rat["decode"]),
        ("decode / bandwidth ceiling", frac["gptoss"], frac["llama_cpp"], None),
    ]
    print(f"CPU: {r['cpu']}   threads: {r['threads']}   preset: {r['preset']}")
    print(
        f"read bandwidth: {r['bandwidth_gbs']} GB/s (start {r['bandwidth_start_gbs']}, end {r['bandwidth_end_gbs']});"
        f" {r['bytes_per_token_gb']} GB/token -> decode ceiling {r['decode_ceiling_tok_s']} tok/s"
    )
    print(f"gptoss: {g.get('ops_backend')} ops, {g.get('dtype')}; llama.cpp: llama-cpp-python {ll['llama_cpp_python']}")
    for op, flavour in g.get("kernels", {}).items():
        print(f"gptoss kernel {op}: {flavour}")
    header = ("", "gptoss", "llama.cpp", "gptoss/llama.cpp")
    width = max(len(str(row[0])) for row in rows)
    print(f"{header[0]:<{width}}  {header[1]:>10}  {header[2]:>10}  {header[3]:>16}")
    for label, a, b, c in rows:
        print(f"{label:<{width}}  {fmt(a):>10}  {fmt(b):>10}  {fmt(c):>16}")
    contention = r["contention"]
    print(f"load average start/end: {contention['loadavg_start']} / {contention['loadavg_end']}")
    for when in ("start", "end"):
        for line in contention[f"busy_at_{when}"]:
            print(f"busy at {when}: {line}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="20b")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--decode-tokens", type=int, default=128)
    p.add_argument("--no-warm", action="store_true", help="skip reading the weight files before each engine")
    args = p.parse_args()
    if llamacpp.installed_version() is None:
        print(
            f"bench_cpu: {llamacpp.DIST} is not installed, so there is nothing to compare against; no numbers "
            f"reported. Install it (builds from source, about 10 minutes on 2 cores):\n  {llamacpp.INSTALL_HINT}",
            file=sys.stderr,
        )
        raise SystemExit(2)

    contention = {"loadavg_start": round(os.getloadavg()[0], 2), "busy_at_start": busy_processes()}
    hf_dir = random_checkpoint(args.preset)
    prep = [sys.executable, "-m", "benchmarks.llamacpp", "prepare", "--preset", args.preset]
    gguf = Path(str(run_half("llama.cpp GGUF conversion", prep)["gguf"]))
    config = json.loads((hf_dir / "config.json").read_text())

    bw_start = bandwidth.read_bandwidth_gbs(args.threads)
    shape = ["--prompt-tokens", str(args.prompt_tokens), "--decode-tokens", str(args.decode_tokens)]
    threads = ["--threads", str(args.threads)]
    warm_s = {"llama_cpp": 0.0 if args.no_warm else warm([gguf])}
    ll = run_half("llama.cpp", [*prep[:3], "run", "--gguf", str(gguf), *threads, *shape])
    warm_s["gptoss"] = 0.0 if args.no_warm else warm(sorted(hf_dir.glob("*.safetensors")))
    g = run_half("gptoss", [*GPTOSS_CMD, "--model", str(hf_dir), *threads, *shape])
    bw_end = bandwidth.read_bandwidth_gbs(args.threads)
    for half in (g, ll):  # gptoss maps its weights lazily and faults them in during prefill; llama.cpp at load
        half["first_token_s"] = round(float(half["load_s"]) + args.prompt_tokens / float(half["prefill_tok_s"]), 2)
    contention["loadavg_end"] = round(os.getloadavg()[0], 2)
    contention["busy_at_end"] = busy_processes()

    bw = max(bw_start, bw_end)
    per_token = bandwidth.bytes_per_token(config)["total"]
    ceiling = bw * 1e9 / per_token
    result: dict[str, object] = {
        "benchmark": "cpu_vs_llama_cpp",
        "preset": args.preset,
        "cpu": cpu_model(),
        "threads": args.threads,
        "prompt_tokens": args.prompt_tokens,
        "decode_tokens": args.decode_tokens,
        "bandwidth_gbs": round(bw, 2),
        "bandwidth_start_gbs": round(bw_start, 2),
        "bandwidth_end_gbs": round(bw_end, 2),
        "bytes_per_token_gb": round(per_token / 1e9, 4),
        "decode_ceiling_tok_s": round(ceiling, 3),
        "ratio_gptoss_over_llama_cpp": {k: ratio(g[key], ll[key]) for k, key in RATIO_KEYS.items()},
        "fraction_of_ceiling": {
            "gptoss": ratio(g["decode_tok_s"], ceiling),
            "llama_cpp": ratio(ll["decode_tok_s"], ceiling),
        },
        "warm_read_s": {k: round(v, 1) for k, v in warm_s.items()},
        "contention": contention,
        "gptoss": g,
        "llama_cpp": ll,
    }
    print_table(result, g, ll)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
