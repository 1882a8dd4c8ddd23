"""Writing weights back out as a checkpoint in the official Hugging Face layout (config.json + model.safetensors,
MXFP4 experts), and re-quantizing changed expert weights to MXFP4 with a measure of what that costs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from gptoss import mxfp4
from gptoss.config import ModelConfig
from gptoss.model import Weights
from gptoss.weights import HF, _names


@dataclass
class QuantError:
    """How far MXFP4 re-quantization moves changed expert weights: relative to the weights, and to the change."""

    sq_err: float = 0.0  # sum of squared (quantized - wanted)
    sq_weight: float = 0.0  # sum of squared wanted weights
    sq_update: float = 0.0  # sum of squared changes (wanted - original)
    tensors: int = 0

    def add(self, wanted: torch.Tensor, quantized: torch.Tensor, original: torch.Tensor) -> None:
        self.sq_err += float((quantized - wanted).pow(2).sum())
        self.sq_weight += float(wanted.pow(2).sum())
        self.sq_update += float((wanted - original).pow(2).sum())
        self.tensors += 1

    def summary(self) -> dict[str, float | int]:
        return {
            "expert_tensors_requantized": self.tensors,
            "relative_rms_error": (self.sq_err / self.sq_weight) ** 0.5 if self.sq_weight else 0.0,
            "error_over_update": (self.sq_err / self.sq_update) ** 0.5 if self.sq_update else 0.0,
        }


def requantize(wanted: torch.Tensor, original: torch.Tensor, report: QuantError) -> tuple[torch.Tensor, torch.Tensor]:
    """wanted (out, in) dense -> (blocks, scales); `original` is the dequantized weight before training."""
    blocks, scales = mxfp4.quantize(wanted)
    report.add(wanted.float(), mxfp4.dequantize(blocks, scales), original.float())
    return blocks, scales


def hf_tensors(w: Weights, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    n = _names(HF)

    def dense(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(dtype).contiguous()

    out = {n(k, 0): dense(getattr(w, k)) for k in ("embedding", "unembedding", "norm")}
    for i, layer in enumerate(w.layers):
        a, m = layer.attn, layer.moe
        for p, weight, bias in (("q", a.wq, a.bq), ("k", a.wk, a.bk), ("v", a.wv, a.bv), ("o", a.wo, a.bo)):
            out[n(f"{p}_weight", i)], out[n(f"{p}_bias", i)] = dense(weight), dense(bias)
        out[n("attn_norm", i)], out[n("sinks", i)] = dense(a.norm), dense(a.sinks)
        out[n("mlp_norm", i)], out[n("router_w", i)], out[n("router_b", i)] = (
            dense(m.norm), dense(m.router_w), dense(m.router_b)
        )  # fmt: skip
        for key in ("mlp1_blocks", "mlp1_scales", "mlp2_blocks", "mlp2_scales"):
            out[n(key, i)] = getattr(m, key).contiguous()
        out[n("mlp1_bias", i)], out[n("mlp2_bias", i)] = dense(m.mlp1_bias), dense(m.mlp2_bias)
    return out


def write_hf_checkpoint(w: Weights, cfg: ModelConfig, out: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    save_file(hf_tensors(w, dtype), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg.to_hf_json(), indent=2) + "\n")
    return out
