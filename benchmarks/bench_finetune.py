"""LoRA training speed and memory: gptoss on the packed MXFP4 checkpoint vs its own prefill, and vs transformers + PEFT.

    python -m benchmarks.bench_finetune [--preset 20b] [--seq 1024] [--steps 2] [--targets q,k,v,o] [--no-hf]

One LoRA optimizer step (forward + backward + AdamW over one sequence of --seq tokens, gradient checkpointing on)
against a prefill of the same tokens through the inference path; peak RSS. Then, unless --no-hf, transformers'
GptOssForCausalLM (experts dequantized to bf16) + PEFT with the same LoRA on the same sequence; skip it on shapes
whose dequantized model does not fit in memory (20b needs ~42 GB). Targets (issue #13): a step costs <= 4x the
prefill; 20b LoRA fits in 20 GB RSS. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import cpu_model, emit, peak_rss_gb, random_checkpoint, rss_gb
from gptoss.finetune.data import Example
from gptoss.finetune.lora import LoraAdapter, LoraConfig
from gptoss.finetune.train import TrainConfig, Trainer
from gptoss.runtime import load


def sequence(vocab: int, n: int) -> Example:
    tokens = torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(0)).tolist()
    return Example(tokens, [0] * (n // 4) + [1] * (n - n // 4), 1)


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def gptoss_step(path: Path, seq: int, steps: int, targets: tuple[str, ...]) -> dict[str, Any]:
    model = load(path)  # bf16, as released
    example = sequence(model.config.vocab_size, seq)
    prefill_s = min(timed(lambda: model.prefill(model.new_cache(), torch.tensor(example.tokens))) for _ in range(2))
    adapter = LoraAdapter(model.config, LoraConfig(r=8, alpha=16.0, targets=targets))
    adapter.reset(torch.Generator().manual_seed(0))
    model.transformer.adapter = adapter
    trainer = Trainer(model.transformer, dict(adapter.factors.items()), TrainConfig(checkpointing=True), [adapter])
    times = []
    for _ in range(steps + 1):  # the first step warms up (page faults, allocator)
        t = time.perf_counter()
        trainer.train_step([example], steps + 1)
        times.append(time.perf_counter() - t)
    step_s = min(times[1:]) if steps else times[0]
    return {
        "prefill_s": round(prefill_s, 3),
        "prefill_tok_s": round(seq / prefill_s, 1),
        "lora_step_s": round(step_s, 3),
        "lora_train_tok_s": round(seq / step_s, 1),
        "step_over_prefill": round(step_s / prefill_s, 2),
        "rss_gb": round(rss_gb(), 2),
        "peak_rss_gb": round(peak_rss_gb(), 2),
    }


def hf_step(path: Path, seq: int, steps: int, targets: tuple[str, ...]) -> dict[str, Any]:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import GptOssForCausalLM, Mxfp4Config

    hf = GptOssForCausalLM.from_pretrained(path, quantization_config=Mxfp4Config(dequantize=True), dtype=torch.bfloat16)
    hf.gradient_checkpointing_enable()
    modules = [f"{t}_proj" for t in targets if t in "qkvo"]
    model = get_peft_model(hf, PeftLoraConfig(r=8, lora_alpha=16, target_modules=modules))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    example = sequence(hf.config.vocab_size, seq)
    labels = torch.tensor([t if m else -100 for t, m in zip(example.tokens, example.mask, strict=True)])[None]
    model.train()
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        model(input_ids=torch.tensor([example.tokens]), labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    step_s = min(times[1:]) if steps else times[0]
    return {"hf_peft_step_s": round(step_s, 3), "hf_peft_train_tok_s": round(seq / step_s, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="20b")
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    p.add_argument("--targets", default="q,k,v,o")
    p.add_argument("--no-hf", action="store_true", help="skip transformers + PEFT")
    args = p.parse_args()
    targets = tuple(args.targets.split(","))
    path = random_checkpoint(args.preset)
    result: dict[str, Any] = {"benchmark": "finetune", "preset": args.preset, "seq": args.seq, "cpu": cpu_model()}
    result["targets"] = args.targets
    result.update(gptoss_step(path, args.seq, args.steps, targets))
    if not args.no_hf:
        result.update(hf_step(path, args.seq, args.steps, targets))
        result["peak_rss_gb_with_hf"] = round(peak_rss_gb(), 2)
    emit([(k, str(v)) for k, v in result.items()], result)


if __name__ == "__main__":
    main()
