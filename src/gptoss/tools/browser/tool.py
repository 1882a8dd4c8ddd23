"""The built-in `browser` tool: `search`, `open`, `find` over a page stack, as the reference browser does it.

Every successful call pushes a page on the stack; its index is the cursor shown as `[cursor]` in the display and
used in citations `【cursor†L12-L15】`. A display is a window of the page's 80-column lines numbered `L{n}: `,
as many as fit in `view_tokens` o200k tokens (or `num_lines` when the model asks), under the header
`[{cursor}] {title} ({url})` / `**viewing lines [a - b] of N**`. Links read `【{id}†{text}】` (`†{domain}` added
for other sites); `open(id=n)` follows one, `open(id="https://...")` opens a URL, `open()` without id scrolls.
`find` lists case-insensitive matches, four lines each, as a page whose links jump back to the match.
One instance per conversation (the stack is the conversation's browsing history).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote

from gptoss.harmony import Message, ToolNamespaceConfig, o200k_harmony
from gptoss.tools.base import Tool, ToolError, int_arg, message_text, parse_json_args, str_arg, tool_message
from gptoss.tools.browser.backend import Backend, BackendError, results_page
from gptoss.tools.browser.page import LINK_PATTERN, Page, PageKind

logger = logging.getLogger(__name__)
FUNCTIONS = ("search", "open", "find")
UNKNOWN_FUNCTION = "Unknown browser function `{function}`: use browser.search, browser.open or browser.find."
FIND_MAX_RESULTS = 50
FIND_LINES_PER_MATCH = 4
_EXAMPLES = {
    "search": '{"query": "bubblewrap sandbox"}',
    "open": '{"id": 3}',
    "find": '{"pattern": "limit"}',
}


def _truncate(text: str, limit: int = 1024) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _strip_links(line: str) -> str:
    return LINK_PATTERN.sub(lambda m: m.group("text"), line)


class BrowserTool(Tool):
    name = "browser"

    def __init__(
        self,
        backends: Backend | Sequence[Backend],
        *,
        view_tokens: int = 1024,
        max_view_tokens: int = 4096,
        max_search_results: int = 20,
    ) -> None:
        self.backends = [backends] if isinstance(backends, Backend) else list(backends)
        if not self.backends:
            raise ValueError("BrowserTool needs at least one backend")
        self.view_tokens, self.max_view_tokens = view_tokens, max_view_tokens
        self.max_search_results = max_search_results
        self.stack: list[Page] = []
        self._cache: dict[str, Page] = {}

    # -- the Tool interface ---------------------------------------------------------------------------------------

    def namespace_config(self) -> ToolNamespaceConfig:
        return ToolNamespaceConfig.browser()

    async def process(self, message: Message) -> list[Message]:
        recipient = message.recipient or "browser"
        function = recipient.rsplit(".", 1)[-1]
        try:
            if function not in FUNCTIONS:
                raise ToolError(UNKNOWN_FUNCTION.format(function=function))
            args = parse_json_args(message_text(message), recipient, _EXAMPLES[function])
            text = await self.call(function, args)
        except ToolError as e:
            text = str(e)
        except Exception as e:  # a bug or an unexpected library error must not end the conversation
            logger.exception("browser.%s failed", function)
            text = f"Error: {recipient} failed unexpectedly ({type(e).__name__}: {_truncate(str(e), 300)})."
        return [tool_message(recipient, text, message.channel)]

    async def call(self, function: str, args: dict[str, Any]) -> str:
        """Run one browser function with parsed arguments; returns the display text, raises ToolError."""
        call = f"browser.{function}"
        if function == "search":
            query = str_arg(args, "query", call, required=True) or ""
            topn = int_arg(args, "topn", int_arg(args, "top_n", 10, call), call)
            return await self.search(query, topn)
        if function == "open":
            return await self.open(
                args.get("id", -1),
                cursor=int_arg(args, "cursor", -1, call),
                loc=int_arg(args, "loc", -1, call),
                num_lines=int_arg(args, "num_lines", -1, call),
                view_source=bool(args.get("view_source", False)),
            )
        if function == "find":
            pattern = str_arg(args, "pattern", call, required=True) or ""
            return await self.find(pattern, int_arg(args, "cursor", -1, call))
        raise ToolError(UNKNOWN_FUNCTION.format(function=function))

    async def aclose(self) -> None:
        for backend in self.backends:
            await backend.aclose()

    # -- functions ------------------------------------------------------------------------------------------------

    async def search(self, query: str, topn: int = 10) -> str:
        if not query.strip():
            raise ToolError("Invalid arguments for browser.search: `query` is empty.")
        backend = next((b for b in self.backends if b.can_search()), None)
        if backend is None:
            raise ToolError("Search is not available: no search backend is configured.")
        try:
            results = await backend.search(query, max(1, min(topn, self.max_search_results)))
        except BackendError as e:
            raise ToolError(f"Error during search for `{query}`: {e}") from None
        return await self._push_and_show(results_page(query, results), 0, -1)

    async def open(
        self, id: object = -1, *, cursor: int = -1, loc: int = -1, num_lines: int = -1, view_source: bool = False
    ) -> str:
        link = _link_id(id)
        target: int | None = None
        if isinstance(link, str):
            page = await self._fetch(link, refresh=True, view_source=view_source)
        else:
            current = self.page(cursor)
            if link >= 0:
                url = current.links.get(link)
                if url is None:
                    raise ToolError(self._bad_link(link, current))
                target = current.targets.get(link)
                page = await self._fetch(url, refresh=False, view_source=view_source)
            elif view_source:
                if not current.url or current.kind is not PageKind.PAGE:
                    raise ToolError("Cannot view the source of a search or find results page.")
                page = await self._fetch(current.url, refresh=False, view_source=True)
            else:
                page = current  # scroll
        if loc < 0:
            loc = 0 if target is None else max(0, target - 4)  # a few lines of context above the match
        return await self._push_and_show(page, loc, num_lines)

    async def find(self, pattern: str, cursor: int = -1) -> str:
        if not pattern:
            raise ToolError("Invalid arguments for browser.find: `pattern` is empty.")
        page = self.page(cursor)
        if page.kind is not PageKind.PAGE:
            raise ToolError("Cannot run `find` on search results page or find results page")
        found = await asyncio.to_thread(find_page, page, pattern)
        return await self._push_and_show(found, 0, -1)

    # -- state ----------------------------------------------------------------------------------------------------

    def page(self, cursor: int = -1) -> Page:
        """The page at `cursor` (-1: the latest). Raises ToolError for a cursor that does not exist."""
        if not self.stack:
            raise ToolError("No pages to access! Use `browser.search` or open a URL first.")
        if cursor == -1:
            return self.stack[-1]
        if not 0 <= cursor < len(self.stack):
            raise ToolError(
                f"Cursor `{cursor}` is out of range. Available cursor indices: [0 - {len(self.stack) - 1}]."
            )
        return self.stack[cursor]

    def citation_target(self, cursor: int) -> tuple[str, str] | None:
        """(url, title) a citation of `cursor` points to; None for unknown cursors and uncitable pages."""
        if not 0 <= cursor < len(self.stack):
            return None
        page = self.stack[cursor]
        return (page.cite_url, page.cite_title or page.title) if page.cite_url else None

    async def _fetch(self, url: str, *, refresh: bool, view_source: bool) -> Page:
        key = f"view-source:{url}" if view_source else url
        if not refresh and key in self._cache:
            return self._cache[key]
        backend = next((b for b in self.backends if b.handles(url)), None)
        if backend is None:
            raise ToolError(
                f"Cannot open `{_truncate(url, 200)}`: no configured source can open it "
                "(offline mode serves only the local index)."
            )
        try:
            page = await backend.fetch(url, view_source=view_source)
        except BackendError as e:
            raise ToolError(str(e)) from None
        self._cache[key] = page
        return page

    @staticmethod
    def _bad_link(link: int, page: Page) -> str:
        if not page.links:
            return f"Invalid link id `{link}`: the page at this cursor has no links."
        return f"Invalid link id `{link}`. Valid link ids on this page: {min(page.links)} to {max(page.links)}."

    # -- display --------------------------------------------------------------------------------------------------

    async def _push_and_show(self, page: Page, loc: int, num_lines: int) -> str:
        """Render the window first (a bad `loc` leaves the stack alone), then push the page. Wrapping and token
        counting of a large page take seconds: they run in a thread, off the event loop."""
        cursor = len(self.stack)
        text = await asyncio.to_thread(self.render, page, cursor, loc, num_lines)
        self.stack.append(page)
        return text

    def render(self, page: Page, cursor: int, loc: int, num_lines: int) -> str:
        lines = page.lines
        total = len(lines)
        if loc >= total:
            raise ToolError(f"Invalid location parameter: `{loc}`. Cannot exceed page maximum of {total - 1}.")
        end = self._window_end(lines, loc, num_lines)
        body = "\n".join(f"L{i}: {lines[i]}" for i in range(loc, end))
        header = f"[{cursor}] {page.title}"
        if page.url:
            header += f" ({_truncate(unquote(page.url))})"
        return f"{header}\n**viewing lines [{loc} - {end - 1}] of {total - 1}**\n\n{body}"

    def _window_end(self, lines: list[str], loc: int, num_lines: int) -> int:
        """End (exclusive) of the view: `num_lines` if given, else what fits in view_tokens; at least one line;
        never more than max_view_tokens."""
        budget = self.max_view_tokens if num_lines > 0 else self.view_tokens
        wanted = loc + num_lines if num_lines > 0 else len(lines)
        encoding = o200k_harmony()
        used, end = 0, loc
        while end < min(wanted, len(lines)):
            used += len(encoding.encode_ordinary(f"L{end}: {lines[end]}\n"))
            if used > budget and end > loc:
                break
            end += 1
        return end


def _link_id(value: object) -> int | str:
    """`open`'s id: a link number (ints, integral floats and digit strings) or a URL; else ToolError."""
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise ToolError(
            f"Invalid arguments for browser.open: `id` must be a link number or a URL, got {json.dumps(value)}."
        )
    if isinstance(value, float):
        if not value.is_integer():
            raise ToolError(f"Invalid arguments for browser.open: `id` must be an integer link number, got {value}.")
        return int(value)
    if isinstance(value, str):
        stripped = value.strip()
        return int(stripped) if stripped.lstrip("-").isdigit() else stripped  # "3" is a link number, not a URL
    return value


def find_page(page: Page, pattern: str) -> Page:
    """Matches of `pattern` (case-insensitive) in the page's lines, link markup ignored, as a results page."""
    needle = pattern.lower()
    lines = [_strip_links(line) for line in page.lines]
    chunks: list[str] = []
    links: dict[int, str] = {}
    targets: dict[int, int] = {}
    i = 0
    while i < len(lines) and len(chunks) < FIND_MAX_RESULTS:
        if needle not in lines[i].lower():
            i += 1
            continue
        n = len(chunks)
        snippet = "\n".join(lines[i : i + FIND_LINES_PER_MATCH])
        chunks.append(f"# 【{n}†match at L{i}】\n{snippet}")
        links[n], targets[n] = page.url, i
        i += FIND_LINES_PER_MATCH
    text = "\n\n".join(chunks) if chunks else f"No `find` results for pattern: `{pattern}`"
    return Page(
        url=f"{page.url}/find?pattern={quote(pattern)}",
        title=f"Find results for text: `{pattern}` in `{page.title}`",
        text=text,
        links=links,
        kind=PageKind.FIND,
        targets=targets,
        cite_url=page.cite_url,
        cite_title=page.cite_title or page.title,
    )
