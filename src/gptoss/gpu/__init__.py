"""The GPU path: `gptoss.load(path, device="cuda")` runs the packed MXFP4 weights with the triton kernels of
gptoss.ops.triton_* (gptoss.gpu.ops), a fixed-shape KV cache (gpu/cache.py) and CUDA graphs for single-token
decode steps (gpu/runtime.py). The CPU path never imports this package."""

from __future__ import annotations

import torch


def require_cuda(device: torch.device) -> None:
    """Raises a RuntimeError that says why `device` cannot be used (no CUDA torch, no GPU, no triton)."""
    if not torch.cuda.is_available():
        why = (
            f"this torch ({torch.__version__}) is built without CUDA"
            if torch.version.cuda is None
            else "torch finds no CUDA device (check the driver and CUDA_VISIBLE_DEVICES)"
        )
        raise RuntimeError(f"device {str(device)!r} was asked for, but {why}; use the CPU (device='cpu')")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise RuntimeError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    try:
        import triton  # noqa: F401
    except ImportError:
        raise RuntimeError("the GPU path needs triton (pip install triton)") from None
