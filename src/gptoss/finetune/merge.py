"""`gptoss merge`: base checkpoint + LoRA adapter -> one checkpoint in the official layout.

Attention and router updates are added in fp32 and stored in the checkpoint's bf16. Adapted experts are merged per
expert (dequantize, add s * B_e A_e) and re-quantized to MXFP4: the report gives the re-quantization error relative
to the merged weights and relative to the LoRA update itself (near or above 1 means MXFP4's resolution swallows
most of the update: serve the adapter unmerged with `--lora` instead).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from gptoss import mxfp4
from gptoss.finetune.export import QuantError, requantize, write_hf_checkpoint
from gptoss.finetune.lora import ATTENTION, LoraAdapter
from gptoss.finetune.peft_io import load_adapter
from gptoss.model import LayerWeights, MoEWeights
from gptoss.runtime import load


def merge(model_dir: Path, adapter_dir: Path, out: Path) -> dict[str, float | int]:
    model = load(model_dir, dtype=torch.float32)
    adapter = load_adapter(adapter_dir, model.config)
    report = QuantError()
    layers = [merge_layer(layer, i, adapter, report) for i, layer in enumerate(model.transformer.w.layers)]
    write_hf_checkpoint(dataclasses.replace(model.transformer.w, layers=layers), model.config, out)
    summary = report.summary()
    (out / "requantization.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@torch.no_grad()
def merge_layer(layer: LayerWeights, i: int, adapter: LoraAdapter, report: QuantError) -> LayerWeights:
    a = layer.attn
    updates = {}
    for target in ATTENTION:
        delta = adapter.linear_delta(i, target)
        if delta is not None:
            updates[f"w{target}"] = getattr(a, f"w{target}") + delta
    attn = dataclasses.replace(a, **updates)
    m = layer.moe
    router = adapter.linear_delta(i, "router")
    moe = dataclasses.replace(m, router_w=m.router_w + router) if router is not None else m
    moe = merge_experts(moe, i, adapter, report)
    return LayerWeights(attn, moe)


def merge_experts(m: MoEWeights, i: int, adapter: LoraAdapter, report: QuantError) -> MoEWeights:
    out = m
    for target, prefix in (("gate_up", "mlp1"), ("down", "mlp2")):
        if adapter.pair(i, target) is None:
            continue
        blocks, scales = getattr(m, f"{prefix}_blocks").clone(), getattr(m, f"{prefix}_scales").clone()
        for e in range(blocks.shape[0]):  # one expert at a time: never the whole layer dense
            base = mxfp4.dequantize(blocks[e], scales[e])
            delta = adapter.expert_delta(i, target, e)
            assert delta is not None
            blocks[e], scales[e] = requantize(base + delta, base, report)
        out = dataclasses.replace(out, **{f"{prefix}_blocks": blocks, f"{prefix}_scales": scales})
    return out
