"""One dispatch point for the hot ops. The backend is picked once, at import.

GPTOSS_OPS=ref forces the plain-torch reference; the default uses the native CPU kernels when they are built and
falls back to the reference otherwise (said once, on stderr). Every backend has the signatures of ops/reference.py.
"""

from __future__ import annotations

import os

from gptoss.ops import reference

attention = reference.attention
moe_experts = reference.moe_experts
swiglu = reference.swiglu
BACKEND = "ref"

_requested = os.environ.get("GPTOSS_OPS", "auto")
if _requested not in ("auto", "ref", "native"):
    raise ValueError(f"GPTOSS_OPS={_requested!r}: expected 'auto', 'ref' or 'native'")
