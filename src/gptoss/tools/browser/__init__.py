"""The built-in browser: the tool (search / open / find over a page stack) and the backends it reads from."""

from gptoss.tools.browser.backend import Backend, BackendError, SearchResult
from gptoss.tools.browser.fetch import UrlRefused, WebFetcher
from gptoss.tools.browser.local import LocalIndex
from gptoss.tools.browser.page import Page, PageKind, html_to_page, markdown_to_page, text_to_page
from gptoss.tools.browser.providers import ExaBackend, YouComBackend
from gptoss.tools.browser.tool import BrowserTool

__all__ = [
    "Backend",
    "BackendError",
    "BrowserTool",
    "ExaBackend",
    "LocalIndex",
    "Page",
    "PageKind",
    "SearchResult",
    "UrlRefused",
    "WebFetcher",
    "YouComBackend",
    "html_to_page",
    "markdown_to_page",
    "text_to_page",
]
