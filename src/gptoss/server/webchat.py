"""GET /: the web chat, one static page (server/static/index.html) that talks to /v1/responses like any client.
The only server-side touch is the list of built-in tools this server offers, written into the page's config."""

from __future__ import annotations

import functools
import json
from importlib import resources

from gptoss.server.config import ServerConfig

CONFIG_SLOT = '<script id="config" type="application/json">{"tools": []}</script>'


@functools.cache
def template() -> str:
    return resources.files("gptoss.server").joinpath("static/index.html").read_text(encoding="utf-8")


def offered_tools(config: ServerConfig) -> list[dict[str, str]]:
    tools = [{"type": "web_search"}] if config.browser is not None else []
    if config.python is not None and config.python_unavailable is None:
        tools.append({"type": "code_interpreter"})
    return tools


def page(config: ServerConfig) -> str:
    data = json.dumps({"tools": offered_tools(config)}).replace("</", "<\\/")  # cannot close the script element
    return template().replace(CONFIG_SLOT, f'<script id="config" type="application/json">{data}</script>')
