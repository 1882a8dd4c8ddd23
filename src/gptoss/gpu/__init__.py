"""The GPU path: `gptoss.load(path, device="cuda")` runs the packed MXFP4 weights with the triton kernels of
gptoss.ops.triton_* (gptoss.gpu.ops), a fixed-shape KV cache (gpu/cache.py) and CUDA graphs for single-token
decode steps (gpu/runtime.py). The CPU path never imports this package."""

from __future__ import annotations

import torch


def cuda_unavailable(device: torch.device) -> str | None:
    """Why `device` (a cuda device) cannot be used: no CUDA in this torch, no GPU, no such index, no triton."""
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            return f"this torch ({torch.__version__}) is built without CUDA"
        return "torch finds no CUDA device (check the driver and CUDA_VISIBLE_DEVICES)"
    if device.index is not None and device.index >= torch.cuda.device_count():
        return f"only {torch.cuda.device_count()} CUDA device(s) present"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "the GPU kernels need triton (pip install triton)"
    return None


def require_cuda(device: torch.device) -> None:
    why = cuda_unavailable(device)
    if why is not None:
        raise RuntimeError(f"device {str(device)!r} was asked for, but {why}; use the CPU (device='cpu')")
