"""Full fine-tuning (`--full`): every weight trains, in fp32. For small models: the experts are dequantized to
dense fp32 matrices for training and re-quantized to MXFP4 when saved (the error that costs is reported)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from gptoss import mxfp4
from gptoss.config import ModelConfig
from gptoss.finetune.export import QuantError, requantize, write_hf_checkpoint
from gptoss.finetune.vocab import SparseVocab
from gptoss.model import AttentionWeights, MoEWeights, Transformer, Weights
from gptoss.ops.reference import swiglu

PACKED = ("mlp1_blocks", "mlp1_scales", "mlp2_blocks", "mlp2_scales")


class FullParams:
    """Makes every dense weight of `tr` a trainable fp32 leaf and holds dense copies of the experts; it is the
    model's Adapter for the MoE (dense experts instead of the packed ones). With `vocab`, the embedding and
    unembedding keep only the used tokens' rows (the others are zero in the saved checkpoint)."""

    def __init__(self, tr: Transformer, vocab: SparseVocab | None = None) -> None:
        self.tr, self.vocab = tr, vocab
        self.params: dict[str, torch.Tensor] = {}
        w = tr.w
        for name in ("embedding", "unembedding"):
            full = getattr(w, name)
            setattr(w, name, self._leaf(name, full if vocab is None else vocab.rows(full)))
        w.norm = self._leaf("norm", w.norm)
        self.w1: list[torch.Tensor] = []
        self.w2: list[torch.Tensor] = []
        for i, layer in enumerate(w.layers):
            for group in (layer.attn, layer.moe):
                for f in dataclasses.fields(group):
                    if f.name not in PACKED:
                        setattr(group, f.name, self._leaf(f"{i}.{f.name}", getattr(group, f.name)))
            m = layer.moe
            self.w1.append(self._leaf(f"{i}.mlp1", mxfp4.dequantize(m.mlp1_blocks, m.mlp1_scales)))  # (E, 2I, H)
            self.w2.append(self._leaf(f"{i}.mlp2", mxfp4.dequantize(m.mlp2_blocks, m.mlp2_scales)))  # (E, H, I)

    def _leaf(self, name: str, t: torch.Tensor) -> torch.Tensor:
        p = t.detach().float().clone().requires_grad_()
        self.params[name] = p
        return p

    def train(self, mode: bool = True) -> None:  # no dropout in full fine-tuning; here for the Trainer's sake
        pass

    def linear(self, layer: int, name: str, x: torch.Tensor) -> torch.Tensor | None:
        return None

    def moe_experts(
        self, layer: int, x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, m: MoEWeights, limit: float
    ) -> torch.Tensor:
        # Grouped: the (token, slot) pairs sorted by expert, one host sync for the group sizes, one index_add.
        flat = idx.reshape(-1)
        order = flat.argsort(stable=True)
        counts = torch.bincount(flat, minlength=len(self.w1[layer])).tolist()
        tok = order // idx.shape[1]
        groups = x[tok].float().split(counts)
        outs = [
            swiglu(g @ self.w1[layer][e].T + m.mlp1_bias[e], limit) @ self.w2[layer][e].T + m.mlp2_bias[e]
            for e, g in enumerate(groups)
            if counts[e]
        ]  # each (n_e, H)
        o = torch.cat(outs) * w.reshape(-1)[order].unsqueeze(1)
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device).index_add(0, tok, o)
        return out.to(x.dtype)

    def packed_weights(self, report: QuantError) -> Weights:
        """The trained weights with the experts re-quantized to MXFP4."""
        layers = []
        for i, layer in enumerate(self.tr.w.layers):
            m = layer.moe
            b1, s1 = requantize(self.w1[i].detach(), mxfp4.dequantize(m.mlp1_blocks, m.mlp1_scales), report)
            b2, s2 = requantize(self.w2[i].detach(), mxfp4.dequantize(m.mlp2_blocks, m.mlp2_scales), report)
            moe = dataclasses.replace(m, mlp1_blocks=b1, mlp1_scales=s1, mlp2_blocks=b2, mlp2_scales=s2)
            layers.append(dataclasses.replace(layer, attn=AttentionWeights(**vars(layer.attn)), moe=moe))
        w = dataclasses.replace(self.tr.w, layers=layers)
        if self.vocab is not None:
            emb, unemb = (self.vocab.expand(t.detach()) for t in (w.embedding, w.unembedding))
            w = dataclasses.replace(w, embedding=emb, unembedding=unemb)
        return w


def save_full(full: FullParams, cfg: ModelConfig, out: Path) -> dict[str, float | int]:
    report = QuantError()
    write_hf_checkpoint(full.packed_weights(report), cfg, out)
    summary = report.summary()
    (out / "requantization.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
