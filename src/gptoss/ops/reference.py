"""Plain-torch forms of the hot ops: the oracle every fast kernel is tested against.

Each function here has a fixed signature that fast backends (ops/native.py, later GPU kernels) reproduce exactly.
They favour clarity and fp32 accumulation over speed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gptoss import mxfp4

SWIGLU_ALPHA = 1.702


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    return F.linear(x, w, b)  # (T, out) = x @ w.T + b


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    t = x.float()
    t = t * torch.rsqrt(t.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (t * scale).to(x.dtype)  # (..., H)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x (T, heads, D) by angles with cos, sin (T, D/2), half-split ("NeoX") pairing:
    dimension j rotates with j + D/2."""
    x1, x2 = x.float().chunk(2, dim=-1)  # (T, heads, D/2) each
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)


def swiglu(h: torch.Tensor, limit: float) -> torch.Tensor:
    """GPT-OSS's clamped SwiGLU: gate and linear halves are interleaved (even = gate, odd = linear), +1 on linear."""
    x_glu, x_lin = h[..., 0::2], h[..., 1::2]  # (..., I) each
    x_glu = x_glu.clamp(max=limit)
    x_lin = x_lin.clamp(min=-limit, max=limit)
    return x_glu * torch.sigmoid(SWIGLU_ALPHA * x_glu) * (x_lin + 1)


def moe_experts(
    x: torch.Tensor,  # (T, H) normed activations
    expert_idx: torch.Tensor,  # (T, k) int64 selected experts
    expert_weights: torch.Tensor,  # (T, k) softmaxed router weights
    mlp1_blocks: torch.Tensor,  # (E, 2I, H/32, 16) uint8
    mlp1_scales: torch.Tensor,  # (E, 2I, H/32) uint8
    mlp1_bias: torch.Tensor,  # (E, 2I)
    mlp2_blocks: torch.Tensor,  # (E, H, I/32, 16) uint8
    mlp2_scales: torch.Tensor,  # (E, H, I/32) uint8
    mlp2_bias: torch.Tensor,  # (E, H)
    swiglu_limit: float,
) -> torch.Tensor:  # (T, H) in x.dtype: sum_k w_k * (mlp2_e(swiglu(mlp1_e(x))) + b2_e)
    T, H = x.shape
    out = torch.zeros(T, H, dtype=torch.float32, device=x.device)
    # One expert at a time, tokens gathered per expert: only one expert's weights are ever dequantized.
    for e in torch.unique(expert_idx).tolist():
        tok, slot = (expert_idx == e).nonzero(as_tuple=True)
        w1 = mxfp4.dequantize(mlp1_blocks[e], mlp1_scales[e])  # (2I, H)
        h = x[tok].float() @ w1.T + mlp1_bias[e].float()  # (n, 2I)
        h = swiglu(h, swiglu_limit)  # (n, I)
        w2 = mxfp4.dequantize(mlp2_blocks[e], mlp2_scales[e])  # (H, I)
        o = h @ w2.T + mlp2_bias[e].float()  # (n, H)
        out.index_add_(0, tok, o * expert_weights[tok, slot].float().unsqueeze(1))
    return out.to(x.dtype)


def attention(
    q: torch.Tensor,  # (T, Hq, D) queries, rotary applied
    k: torch.Tensor,  # (S, Hkv, D) keys (cached + new), rotary applied
    v: torch.Tensor,  # (S, Hkv, D)
    sinks: torch.Tensor,  # (Hq,) learned sink logits
    q_pos: torch.Tensor,  # (T,) int64 absolute positions of the queries
    k_pos: torch.Tensor,  # (S,) int64 absolute positions of the keys; -1 marks an empty cache slot
    window: int,  # 0 = full causal; W > 0 = each query sees its last W positions (itself included)
    scale: float,
) -> torch.Tensor:  # (T, Hq*D) in q.dtype
    T, Hq, D = q.shape
    Hkv = k.shape[1]
    qg = q.float().view(T, Hkv, Hq // Hkv, D)  # (T, Hkv, G, D): query head h uses kv head h // G
    scores = torch.einsum("thgd,shd->hgts", qg, k.float()) * scale  # (Hkv, G, T, S)
    allowed = (k_pos[None, :] <= q_pos[:, None]) & (k_pos[None, :] >= 0)  # (T, S) causal, filled slots only
    if window > 0:
        allowed &= k_pos[None, :] > q_pos[:, None] - window
    scores = scores.masked_fill(~allowed, float("-inf"))
    sink = sinks.float().view(Hkv, Hq // Hkv, 1, 1).expand(Hkv, Hq // Hkv, T, 1)
    # The sink is one extra logit per head with no value: it absorbs probability mass, so weights sum to < 1.
    probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]  # (Hkv, G, T, S)
    out = torch.einsum("hgts,shd->thgd", probs, v.float())  # (T, Hkv, G, D)
    return out.reshape(T, Hq * D).to(q.dtype)


@dataclass(frozen=True)
class BlockTables:
    """Where each sequence of a flat batch reads its keys in a paged pool (engine/paged.py), as device tensors.
    Sequence i owns query rows [row_start[i], row_start[i] + rows[i]) and sees pool blocks ids[i, :n_blocks[i]],
    whose slots hold positions first_pos[i], first_pos[i] + 1, ... in order (slots past its end are the future)."""

    ids: torch.Tensor  # (sequences, max blocks) int32, padded
    n_blocks: torch.Tensor  # (sequences,) int32
    first_pos: torch.Tensor  # (sequences,) int64
    row_start: torch.Tensor  # (sequences,) int32
    rows: torch.Tensor  # (sequences,) int32
    max_rows: int  # the largest of rows, known on the host (a grid size)


def paged_attention(
    q: torch.Tensor,  # (N, Hq, D) the flat batch's queries, rotary applied
    k_pool: torch.Tensor,  # (blocks, block_size, Hkv, D) one layer's key blocks
    v_pool: torch.Tensor,  # (blocks, block_size, Hkv, D)
    sinks: torch.Tensor,  # (Hq,)
    q_pos: torch.Tensor,  # (N,) int64
    tables: BlockTables,
    window: int,
    scale: float,
) -> torch.Tensor:  # (N, Hq*D) in q.dtype: each sequence's rows attend over its own blocks only
    bs = k_pool.shape[1]
    outs = []
    for i in range(tables.ids.shape[0]):
        r0, n, nb = int(tables.row_start[i]), int(tables.rows[i]), int(tables.n_blocks[i])
        ids = tables.ids[i, :nb].long()
        k, v = k_pool[ids].flatten(0, 1), v_pool[ids].flatten(0, 1)  # (nb * bs, Hkv, D)
        k_pos = int(tables.first_pos[i]) + torch.arange(nb * bs, device=q.device)
        outs.append(attention(q[r0 : r0 + n], k, v, sinks, q_pos[r0 : r0 + n], k_pos, window, scale))
    return torch.cat(outs)
