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

from gptoss.ops.reference import BlockTables
from gptoss.ops.triton_moe import dot, dot_f32

BLOCK_M = 16
BLOCK_N = 64


@triton.jit
def _key_block(qt, k, v, kv_off, kv_ok, allowed, m_i, l_i, acc, scale_log2, DOT_F32: tl.constexpr):
    """One block of keys into the online softmax (m_i, l_i, acc), skipped when no row may see any of its keys: the
    causal future, outside the band, empty slots (a decode step over a half-filled buffer reads its filled part)."""
    if tl.max(tl.max(allowed.to(tl.int32), axis=1), axis=0) > 0:
        kt = tl.load(k + kv_off, mask=kv_ok, other=0.0)
        vt = tl.load(v + kv_off, mask=kv_ok, other=0.0)
        if DOT_F32:
            kt, vt = kt.to(tl.float32), vt.to(tl.float32)
        s = dot(qt, tl.trans(kt), DOT_F32) * scale_log2
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + dot(p.to(vt.dtype), vt, DOT_F32)
        m_i = m_new
    return m_i, l_i, acc


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
        kv_off = c[:, None] * k_stride + hk * D + d[None, :]
        m_i, l_i, acc = _key_block(qt, k, v, kv_off, c_ok[:, None] & d_ok[None, :], allowed, m_i, l_i, acc,
                                   scale_log2, DOT_F32)  # fmt: skip
    o = acc / l_i[:, None]
    tl.store(out + t[:, None] * (Hq * D) + h[:, None] * D + d[None, :], o.to(out.dtype.element_ty),
             mask=r_ok[:, None] & d_ok[None, :])  # fmt: skip


@triton.jit
def _paged_attention(q, k, v, sinks, q_pos, ids, n_blocks, first_pos, row_start, rows, out, G, window, scale_log2,
                     max_blocks, m_blocks, q_stride, Hq: tl.constexpr, Hkv: tl.constexpr, D: tl.constexpr,
                     DP: tl.constexpr, BS: tl.constexpr, BSP: tl.constexpr, BM: tl.constexpr,
                     DOT_F32: tl.constexpr):  # fmt: skip
    seq = tl.program_id(0) // m_blocks
    hk = tl.program_id(1)
    r = (tl.program_id(0) % m_blocks) * BM + tl.arange(0, BM)  # rows of this sequence: (token, head in group)
    r_ok = r < tl.load(rows + seq) * G
    t = tl.load(row_start + seq) + r // G
    h = hk * G + r % G
    d = tl.arange(0, DP)
    d_ok = d < D
    qt = tl.load(q + t[:, None] * q_stride + h[:, None] * D + d[None, :], mask=r_ok[:, None] & d_ok[None, :], other=0.0)
    qp = tl.load(q_pos + t, mask=r_ok, other=0)
    low = tl.where(window > 0, qp - window, -1)
    m_i = tl.load(sinks + h, mask=r_ok, other=0.0).to(tl.float32) * 1.4426950408889634
    l_i = tl.full((BM,), 1.0, tl.float32)
    acc = tl.zeros((BM, DP), tl.float32)
    if DOT_F32:
        qt = qt.to(tl.float32)
    p0 = tl.load(first_pos + seq)
    c = tl.arange(0, BSP)
    c_ok = c < BS
    for j in range(0, tl.load(n_blocks + seq)):
        block = tl.load(ids + seq * max_blocks + j).to(tl.int64)
        kp = tl.where(c_ok, p0 + j * BS + c, -1)
        allowed = (kp[None, :] <= qp[:, None]) & (kp[None, :] >= 0) & (kp[None, :] > low[:, None])
        kv_off = ((block * BS + c)[:, None] * Hkv + hk) * D + d[None, :]
        m_i, l_i, acc = _key_block(qt, k, v, kv_off, c_ok[:, None] & d_ok[None, :], allowed, m_i, l_i, acc,
                                   scale_log2, DOT_F32)  # fmt: skip
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
    """One launch for a whole batched step: a program takes 16 rows of one sequence and one KV head and walks that
    sequence's block table in the pool (no gathered copy of its keys)."""
    N, Hq, D = q.shape
    _, bs, Hkv, _ = k_pool.shape
    if k_pool.shape[3] != D or v_pool.shape != k_pool.shape or Hq % Hkv or sinks.shape != (Hq,):
        raise ValueError(f"paged_attention: q {tuple(q.shape)} and pools {tuple(k_pool.shape)} do not fit GQA")
    if not (k_pool.is_contiguous() and v_pool.is_contiguous()):
        raise ValueError("paged_attention: the key and value pools must be contiguous")
    qc = q if q.stride(2) == 1 and q.stride(1) == D else q.contiguous()
    out = torch.empty(N, Hq * D, dtype=q.dtype, device=q.device)
    n_seq = tables.ids.shape[0]
    if N == 0 or n_seq == 0:
        return out
    G = Hq // Hkv
    m_blocks = triton.cdiv(tables.max_rows * G, BLOCK_M)
    _paged_attention[(n_seq * m_blocks, Hkv)](
        qc, k_pool, v_pool, sinks, q_pos, tables.ids, tables.n_blocks, tables.first_pos, tables.row_start,
        tables.rows, out, G, int(window), float(scale) * math.log2(math.e), tables.ids.shape[1], m_blocks,
        qc.stride(0), Hq=Hq, Hkv=Hkv, D=D, DP=max(16, triton.next_power_of_2(D)), BS=bs,
        BSP=max(16, triton.next_power_of_2(bs)), BM=BLOCK_M, DOT_F32=dot_f32(qc) or k_pool.dtype == torch.float32,
    )  # fmt: skip
    return out
