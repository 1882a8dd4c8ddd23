"""The errors gptoss raises for bad input. All are ValueErrors whose message names the file, tensor or limit."""

from __future__ import annotations


class GptossError(ValueError):
    """Base class: an error caused by input (a checkpoint, a config, a request), never a bug in gptoss."""


class ConfigError(GptossError):
    """A config.json that is missing, unreadable or inconsistent."""


class CheckpointError(GptossError):
    """A checkpoint whose files or tensors are missing, truncated, or do not match its config."""


class InputError(GptossError):
    """A request the model cannot serve: token ids outside the vocabulary, context overflow, bad sampling values."""
