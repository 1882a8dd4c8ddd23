"""The interface between the browser tool and where pages come from.

A backend may search (return ranked results) and may fetch (turn a URL into a `Page`). The tool asks one backend
to search and the first backend that `handles()` a URL to fetch it: the offline local index handles its own
`file://` URLs, the guarded web fetcher handles http(s), a search provider (Exa, You.com) handles http(s) through
its contents API.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from gptoss.tools.browser.page import Page, PageKind, domain_of, merge_whitespace

SNIPPET_CHARS = 400


class BackendError(Exception):
    """A search or fetch failed; the message is shown to the model."""


@dataclass(frozen=True)
class SearchResult:
    title: str
    url: str
    snippet: str = ""
    line: int | None = None  # where in the page the snippet is (open lands there)


class Backend(ABC):
    source = "web"

    def can_search(self) -> bool:
        return True

    @abstractmethod
    def handles(self, url: str) -> bool:
        """Whether `fetch(url)` is this backend's job."""

    async def search(self, query: str, topn: int) -> list[SearchResult]:
        raise BackendError(f"{type(self).__name__} cannot search")

    @abstractmethod
    async def fetch(self, url: str, *, view_source: bool = False) -> Page:
        """The page at `url` (raises BackendError)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


_BRACKETS = str.maketrans("【】†", "〖〗‡")


def _clean(text: str) -> str:
    return merge_whitespace(text.translate(_BRACKETS)).strip()


def results_page(query: str, results: list[SearchResult]) -> Page:
    """The search results page: one list item per result, `【i†title†domain】 snippet`, link i -> result i."""
    lines = ["# Search Results", ""]
    links: dict[int, str] = {}
    targets: dict[int, int] = {}
    for i, r in enumerate(results):
        title, domain = _clean(r.title) or r.url, domain_of(r.url)
        anchor = f"【{i}†{title}†{domain}】" if domain else f"【{i}†{title}】"
        snippet = _clean(r.snippet)
        if len(snippet) > SNIPPET_CHARS:
            snippet = snippet[: SNIPPET_CHARS - 1].rstrip() + "…"
        lines.append(f"  * {anchor} {snippet}".rstrip())
        links[i] = r.url
        if r.line is not None:
            targets[i] = r.line
    if not results:
        lines.append(f"No results for `{_clean(query)}`.")
    return Page(url="", title=query, text="\n".join(lines), links=links, kind=PageKind.SEARCH, targets=targets)
