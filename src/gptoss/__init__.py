"""gptoss: a Python runtime for OpenAI's GPT-OSS models."""

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
