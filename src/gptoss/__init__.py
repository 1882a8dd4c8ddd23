"""gptoss: a Python runtime for OpenAI's GPT-OSS models."""

import os

# Before torch loads its OpenMP runtime: idle OpenMP threads sleep instead of spinning after every parallel region.
# Spinning threads take the cores the native kernels' own thread pool runs on (and, on a shared machine, other
# processes' cores): a 4-sequence decode step measured 2-3x slower in wall time with them. An explicit value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from gptoss.config import PRESETS, ModelConfig
from gptoss.errors import CheckpointError, ConfigError, GptossError, InputError
from gptoss.runtime import Model, load
from gptoss.sampling import SamplingParams

__all__ = [
    "PRESETS",
    "CheckpointError",
    "ConfigError",
    "GptossError",
    "InputError",
    "Model",
    "ModelConfig",
    "SamplingParams",
    "load",
]
__version__ = "0.1.0"
