"""The OpenAI-compatible HTTP server: Responses, Chat Completions, Completions, models, health, metrics."""

from gptoss.server.app import create_app
from gptoss.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
