"""gpt-oss's built-in tools (`browser`, `python`) behind one small interface, and the in-loop tool step.

`BuiltinTools` (loop.py) is what an engine calls; `PythonTool` runs code in a bubblewrap sandbox (sandbox.py);
`BrowserTool` browses an offline local index, guarded web fetches or a search provider (browser/); citations.py
turns `【cursor†Lx-Ly】` into url_citation annotations.
"""

from gptoss.tools.base import Tool, ToolError
from gptoss.tools.browser import BrowserTool, ExaBackend, LocalIndex, WebFetcher, YouComBackend
from gptoss.tools.citations import UrlCitation, resolve_citations, split_pending
from gptoss.tools.loop import BuiltinTools, Route, ToolStep
from gptoss.tools.python import EMPTY_OUTPUT_HINT, PythonTool
from gptoss.tools.sandbox import SandboxConfig, SandboxLimits, SandboxPool

__all__ = [
    "EMPTY_OUTPUT_HINT",
    "BrowserTool",
    "BuiltinTools",
    "ExaBackend",
    "LocalIndex",
    "PythonTool",
    "Route",
    "SandboxConfig",
    "SandboxLimits",
    "SandboxPool",
    "Tool",
    "ToolError",
    "ToolStep",
    "UrlCitation",
    "WebFetcher",
    "YouComBackend",
    "resolve_citations",
    "split_pending",
]
