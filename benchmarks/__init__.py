"""Benchmark scripts (`python -m benchmarks.<name>`; each prints one JSON object last).

gptoss is imported here, before any script imports torch, so that its OpenMP setting (gptoss/__init__.py) applies.
"""

import gptoss  # noqa: F401
