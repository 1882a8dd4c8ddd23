"""One dispatch point for the hot ops. The backend is picked once, at import.

GPTOSS_OPS=ref forces the plain-torch reference; GPTOSS_OPS=native requires the native CPU kernels (an error if the
C extension is not built; on a CPU without AVX2+FMA they run their portable scalar path). The default, auto, uses
the native kernels when they are built and the CPU has AVX2+FMA, and otherwise falls back to the reference, saying
so once on stderr. Attention over more than a few query tokens takes torch's CPU flash kernel (ops/flash.py) under
auto and native alike, as it needs no extension; decode steps take the native kernel when it is used. Every backend
has the signatures of ops/reference.py.
"""

from __future__ import annotations

import os
import sys

from gptoss.ops import reference

attention = reference.attention
linear = reference.linear
rms_norm = reference.rms_norm
rope = reference.rope
moe_experts = reference.moe_experts
swiglu = reference.swiglu
BACKEND = "ref"
FALLBACK_REASON = ""  # why auto did not pick the native kernels ("" when it did, or when ref was asked for)

_requested = os.environ.get("GPTOSS_OPS", "auto")
if _requested not in ("auto", "ref", "native"):
    raise ValueError(f"GPTOSS_OPS={_requested!r}: expected 'auto', 'ref' or 'native'")

if _requested != "ref":
    from gptoss.ops import flash, native

    if flash.available():
        attention = flash.attention

    _ok, _why = native.available()
    if _requested == "native" and not native.built():
        raise ImportError(f"GPTOSS_OPS=native, but {_why}; reinstall with a C compiler (pip install -e .)")
    if _ok or _requested == "native":
        moe_experts = native.moe_experts
        linear = native.linear
        attention = native.attention
        rms_norm = native.rms_norm
        rope = native.rope
        BACKEND = "native"
    else:
        FALLBACK_REASON = _why
        print(f"gptoss: native CPU kernels not used: {_why}; running the reference ops", file=sys.stderr)
