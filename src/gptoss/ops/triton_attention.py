# mypy: allow-untyped-defs
"""Triton attention with gpt-oss's sinks and 128-token band (the GPU twin of reference.attention).

One flash-attention kernel serves prefill and decode: a program takes BLOCK_M rows of one KV head, a row being one
(query token, query head of that KV head's group), so a decode step's G query heads share every key and value it
loads. Keys are masked by absolute position exactly as in the reference (causal, filled slots only, the band on
sliding layers), so the slots may come in any order: ring buffers, paged blocks, a chunk after its cache. The
online softmax starts from the sink (one extra logit per head with no value): m = sink, l = 1, acc = 0, so the
weights sum to < 1 and a row that sees no key gives 0. Plain Triton: Ampere and newer.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from gptoss.ops.triton_moe import dot_f32

BLOCK_M = 16
BLOCK_N = 64


@triton.jit
def _attention(q, k, v, sinks, q_pos, k_pos, out, T, S, G, window, scale_log2,
               q_stride, k_stride, Hq: tl.constexpr, D: tl.constexpr, DP: tl.constexpr, BM: tl.constexpr,
               BN: tl.constexpr, DOT_F32: tl.constexpr):  # fmt: skip
    hk = tl.program_id(1)
    r = tl.program_id(0) * BM + tl.arange(0, BM)  # rows: (token, head in group)
    r_ok = r < T * G
    t = r // G
    h = hk * G + r % G
    d = tl.arange(0, DP)
    d_ok = d < D
    qt = tl.load(q + t[:, None] * q_stride + h[:, None] * D + d[None, :], mask=r_ok[:, None] & d_ok[None, :], other=0.0)
    qp = tl.load(q_pos + t, mask=r_ok, other=0)
    low = tl.where(window > 0, qp - window, -1)  # keys at or below `low` are outside the band
    m_i = tl.load(sinks + h, mask=r_ok, other=0.0).to(tl.float32) * 1.4426950408889634  # log2 units
    l_i = tl.full((BM,), 1.0, tl.float32)
    acc = tl.zeros((BM, DP), tl.float32)
    if DOT_F32:
        qt = qt.to(tl.float32)
    for s0 in range(0, S, BN):
        c = s0 + tl.arange(0, BN)
        c_ok = c < S
        kp = tl.load(k_pos + c, mask=c_ok, other=-1)
        allowed = (kp[None, :] <= qp[:, None]) & (kp[None, :] >= 0) & (kp[None, :] > low[:, None])
        # Skip key blocks no row may see: the causal future, outside the band, empty slots (a decode step over a
        # half-filled buffer reads only the filled part).
        if tl.max(tl.max(allowed.to(tl.int32), axis=1), axis=0) > 0:
            kv_off = c[:, None] * k_stride + hk * D + d[None, :]
            kv_ok = c_ok[:, None] & d_ok[None, :]
            kt = tl.load(k + kv_off, mask=kv_ok, other=0.0)
            vt = tl.load(v + kv_off, mask=kv_ok, other=0.0)
            if DOT_F32:
                kt, vt = kt.to(tl.float32), vt.to(tl.float32)
            s = tl.dot(qt, tl.trans(kt), input_precision="ieee") * scale_log2
            s = tl.where(allowed, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            p = tl.exp2(s - m_new[:, None])
            alpha = tl.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt, input_precision="ieee")
            m_i = m_new
    o = acc / l_i[:, None]
    tl.store(out + t[:, None] * (Hq * D) + h[:, None] * D + d[None, :], o.to(out.dtype.element_ty),
             mask=r_ok[:, None] & d_ok[None, :])  # fmt: skip


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
    S, Hkv = k.shape[0], k.shape[1]
    if k.shape != (S, Hkv, D) or v.shape != k.shape or Hq % Hkv or sinks.shape != (Hq,):
        raise ValueError(f"attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not fit GQA")
    if q_pos.shape != (T,) or k_pos.shape != (S,):
        raise ValueError(f"attention: q_pos {tuple(q_pos.shape)} / k_pos {tuple(k_pos.shape)} do not match q / k")
    # Heads packed inside a row (rows may sit apart); K and V with one row layout.
    qc = q if q.stride(2) == 1 and q.stride(1) == D else q.contiguous()
    kc, vc = k.contiguous(), v.contiguous()
    out = torch.empty(T, Hq * D, dtype=q.dtype, device=q.device)
    if T == 0:
        return out
    G = Hq // Hkv  # DP (the padded head dim) >= 16: tl.dot's smallest K on the GPU
    grid = (triton.cdiv(T * G, BLOCK_M), Hkv)
    _attention[grid](
        qc, kc, vc, sinks, q_pos, k_pos, out, T, S, G, int(window), float(scale) * math.log2(math.e),
        qc.stride(0), kc.stride(0), Hq=Hq, D=D, DP=max(16, triton.next_power_of_2(D)), BM=BLOCK_M, BN=BLOCK_N,
        DOT_F32=dot_f32(qc) or kc.dtype == torch.float32,
    )  # fmt: skip
    return out
