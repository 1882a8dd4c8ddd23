"""The GPT-OSS forward pass, top to bottom, in plain torch.

Read this file to know what gpt-oss computes. Per layer: RMSNorm -> attention (GQA, YaRN RoPE, a learned sink
logit per head, a 128-token band on sliding layers) -> residual; RMSNorm -> router (top-k, then softmax over the k)
-> MXFP4 experts with clamped SwiGLU -> residual. Then a final RMSNorm and the unembedding.

The hot ops (RMSNorm, the rotary embedding, the projections, the attention core and the expert MLPs) go through
`gptoss.ops` (`gptoss.gpu.ops` on a GPU: Transformer's `kernels`), whose plain-torch forms (ops/reference.py) hold
the rest of the math (the sink softmax, the interleaved SwiGLU with its +1 and clamp).
Nothing about speed lives here: kernels, caches policy and threading are chosen outside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

import torch

from gptoss import ops
from gptoss.config import ModelConfig, yarn_low_high
from gptoss.kv_cache import AttentionCache, LayerAttention


@dataclass
class AttentionWeights:
    norm: torch.Tensor  # (H,) fp32
    wq: torch.Tensor  # (Hq*D, H)
    bq: torch.Tensor  # (Hq*D,)
    wk: torch.Tensor  # (Hkv*D, H)
    bk: torch.Tensor  # (Hkv*D,)
    wv: torch.Tensor  # (Hkv*D, H)
    bv: torch.Tensor  # (Hkv*D,)
    wo: torch.Tensor  # (H, Hq*D)
    bo: torch.Tensor  # (H,)
    sinks: torch.Tensor  # (Hq,)


@dataclass
class MoEWeights:
    norm: torch.Tensor  # (H,) fp32
    router_w: torch.Tensor  # (E, H)
    router_b: torch.Tensor  # (E,)
    mlp1_blocks: torch.Tensor  # (E, 2I, H/32, 16) uint8, rows interleave gate (even) and linear (odd)
    mlp1_scales: torch.Tensor  # (E, 2I, H/32) uint8
    mlp1_bias: torch.Tensor  # (E, 2I)
    mlp2_blocks: torch.Tensor  # (E, H, I/32, 16) uint8
    mlp2_scales: torch.Tensor  # (E, H, I/32) uint8
    mlp2_bias: torch.Tensor  # (E, H)


@dataclass
class LayerWeights:
    attn: AttentionWeights
    moe: MoEWeights


@dataclass
class Weights:
    embedding: torch.Tensor  # (V, H)
    layers: list[LayerWeights]
    norm: torch.Tensor  # (H,) fp32
    unembedding: torch.Tensor  # (V, H)


class Rope:
    """YaRN-scaled rotary embedding: per-dimension blend of original and 1/factor frequencies, and a
    'concentration' factor 0.1*ln(factor)+1 multiplied into both cos and sin (so q.k scales by its square)."""

    def __init__(self, cfg: ModelConfig, device: torch.device | str = "cpu") -> None:
        d_half = cfg.head_dim // 2
        freq = cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim)  # (D/2,)
        if cfg.rope_scaling_factor > 1.0:
            self.concentration = 0.1 * math.log(cfg.rope_scaling_factor) + 1.0
            low, high = yarn_low_high(cfg)
            high = high + 0.001 if low == high else high  # a zero-width ramp, widened as transformers does
            interpolation = 1.0 / (cfg.rope_scaling_factor * freq)
            extrapolation = 1.0 / freq
            ramp = (torch.arange(d_half, dtype=torch.float32) - low) / (high - low)
            mask = 1 - ramp.clamp(0, 1)  # 1 = keep the original frequency, 0 = fully interpolated
            self.inv_freq = interpolation * (1 - mask) + extrapolation * mask
        else:
            self.concentration = 1.0
            self.inv_freq = 1.0 / freq
        self.inv_freq = self.inv_freq.to(device)  # beside the positions: a no-op on the CPU

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions.float()[:, None] * self.inv_freq[None, :]  # (T, D/2)
        return torch.cos(angles) * self.concentration, torch.sin(angles) * self.concentration


class Adapter(Protocol):
    """Trained low-rank additions to a frozen model (gptoss.finetune's LoRA); None in a plain model."""

    def linear(self, layer: int, name: str, x: torch.Tensor) -> torch.Tensor | None: ...  # added to q/k/v/o/router

    def moe_experts(
        self, layer: int, x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, m: MoEWeights, limit: float
    ) -> torch.Tensor | None: ...  # when not None, used instead of ops.moe_experts


class Transformer:
    def __init__(
        self, cfg: ModelConfig, weights: Weights, adapter: Adapter | None = None, kernels: ModuleType = ops
    ) -> None:
        self.cfg = cfg
        self.w = weights
        self.adapter = adapter
        self.ops = kernels  # gptoss.ops (the CPU backends) or gptoss.gpu.ops (triton): the same signatures
        self.rope = Rope(cfg, weights.norm.device)
        self.sm_scale = 1.0 / math.sqrt(cfg.head_dim)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, cache: AttentionCache | None) -> torch.Tensor:
        """tokens (T,) at absolute `positions` (T,) -> final hidden states (T, H). With `cache`, the keys and values
        of earlier positions come from it and this chunk's are added to it (the T tokens may belong to several
        sequences, which the cache tells apart); without, the chunk is the sequence."""
        x = self.w.embedding[tokens]  # (T, H)
        cos, sin = self.rope.cos_sin(positions)
        for i in range(len(self.w.layers)):
            x = self.block(x, i, positions, cos, sin, cache)
        return self.ops.rms_norm(x, self.w.norm, self.cfg.rms_norm_eps)

    def block(
        self,
        x: torch.Tensor,
        i: int,
        positions: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: AttentionCache | None,
    ) -> torch.Tensor:
        layer = self.w.layers[i]
        x = x + self.attention(x, layer.attn, i, positions, cos, sin, cache)
        return x + self.moe(x, layer.moe, i)

    def unembed(self, h: torch.Tensor) -> torch.Tensor:
        return self.ops.linear(h, self.w.unembedding).float()  # (T, V), no bias, no softcap

    def linear(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, layer: int, name: str) -> torch.Tensor:
        y = self.ops.linear(x, w, b)
        delta = self.adapter.linear(layer, name, x) if self.adapter is not None else None
        return y if delta is None else y + delta.to(y.dtype)

    def attention(
        self,
        x: torch.Tensor,
        a: AttentionWeights,
        layer: int,
        positions: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: AttentionCache | None,
    ) -> torch.Tensor:
        cfg, T = self.cfg, x.shape[0]
        t = self.ops.rms_norm(x, a.norm, cfg.rms_norm_eps)
        q = self.linear(t, a.wq, a.bq, layer, "q").view(T, cfg.num_attention_heads, cfg.head_dim)  # (T, Hq, D)
        k = self.linear(t, a.wk, a.bk, layer, "k").view(T, cfg.num_key_value_heads, cfg.head_dim)  # (T, Hkv, D)
        v = self.linear(t, a.wv, a.bv, layer, "v").view(T, cfg.num_key_value_heads, cfg.head_dim)  # (T, Hkv, D)
        q, k = self.ops.rope(q, cos, sin), self.ops.rope(k, cos, sin)  # half-split: j pairs with j + D/2
        window = cfg.sliding_window if cfg.is_sliding(layer) else 0

        core = LayerAttention(self.ops, a.sinks, window, self.sm_scale)  # (q, k, v, q_pos, k_pos) -> (T, Hq*D)
        # With a cache, it adds this chunk's keys and values and runs `core` over each sequence's keys.
        o = core(q, k, v, positions, positions) if cache is None else cache.attend(layer, q, k, v, positions, core)
        return self.linear(o, a.wo, a.bo, layer, "o")  # (T, H)

    def moe(self, x: torch.Tensor, m: MoEWeights, layer: int) -> torch.Tensor:
        cfg = self.cfg
        t = self.ops.rms_norm(x, m.norm, cfg.rms_norm_eps)
        g = self.linear(t, m.router_w, m.router_b, layer, "router").float()  # (T, E)
        # Top-k first, then a softmax over only the k selected logits.
        vals, idx = torch.topk(g, cfg.experts_per_token, dim=-1, sorted=True)  # (T, k)
        w = torch.softmax(vals, dim=-1)  # (T, k)
        a = self.adapter
        adapted = a.moe_experts(layer, t, idx, w, m, cfg.swiglu_limit) if a is not None else None
        return adapted if adapted is not None else self.experts(t, idx, w, m)

    def experts(self, t: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, m: MoEWeights) -> torch.Tensor:
        """(T, H): each token's k selected experts applied to it, weighted by w (a tensor-parallel rank holds a
        slice of every expert's intermediate dimension, so this is its partial sum)."""
        return self.ops.moe_experts(
            t, idx, w,
            m.mlp1_blocks, m.mlp1_scales, m.mlp1_bias,
            m.mlp2_blocks, m.mlp2_scales, m.mlp2_bias,
            self.cfg.swiglu_limit,
        )  # fmt: skip
