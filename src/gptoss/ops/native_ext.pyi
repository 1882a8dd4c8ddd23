# Type stub for the C extension built from ops/native_src (see setup.py); called only through ops/native.py.

def moe(
    x: int,
    expert_idx: int,
    expert_weights: int,
    mlp1_blocks: int,
    mlp1_scales: int,
    mlp1_bias: int,
    mlp2_blocks: int,
    mlp2_scales: int,
    mlp2_bias: int,
    out: int,
    T: int,
    k: int,
    E: int,
    H: int,
    I: int,
    x_bf16: int,
    b1_bf16: int,
    b2_bf16: int,
    swiglu_limit: float,
    isa: int,
    nthreads: int,
    gemm_min_tokens: int,
    act_int8: int = 0,
    /,
) -> None: ...
def cpu_has_avx2() -> bool: ...
def cpu_has_avx512() -> bool: ...
def cpu_has_avx512_vnni() -> bool: ...
def cpu_has_amx() -> bool: ...
def threaded() -> bool: ...
def linear(
    x: int,
    w: int,
    b: int,
    y: int,
    T: int,
    K: int,
    N: int,
    x_bf16: int,
    b_bf16: int,
    y_bf16: int,
    isa: int,
    nthreads: int,
    /,
) -> None: ...
def attention(
    q: int,
    k: int,
    v: int,
    sinks: int,
    q_pos: int,
    k_pos: int,
    out: int,
    T: int,
    S: int,
    Hq: int,
    Hkv: int,
    D: int,
    window: int,
    scale: float,
    q_bf16: int,
    kv_bf16: int,
    out_bf16: int,
    isa: int,
    nthreads: int,
    /,
) -> None: ...
def rms_norm(x: int, scale: int, y: int, T: int, H: int, eps: float, bf16: int, nthreads: int, /) -> None: ...
def rope(
    x: int, cos: int, sin: int, y: int, T: int, heads: int, D: int, x_stride: int, bf16: int, nthreads: int, /
) -> None: ...
