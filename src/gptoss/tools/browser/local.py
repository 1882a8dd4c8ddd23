"""The default, offline search backend: a BM25 index (bm25s) over a folder of HTML, Markdown and text files.

Each file becomes a page (rendered once, at index time). Pages are cut into passages of consecutive non-empty
lines; BM25 ranks passages, the best passage of each file becomes that result's snippet, and opening the result
lands a few lines above it. Only indexed files can be opened: a URL is looked up in the index, never in the file
system, so the model cannot read anything the user did not put in the folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urldefrag

import bm25s
from bm25s.tokenization import Tokenizer

from gptoss.tools.browser.backend import Backend, BackendError, SearchResult
from gptoss.tools.browser.page import LINK_PATTERN, Page, html_to_page, markdown_to_page, source_page, text_to_page

KINDS = {
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".md": "markdown", ".markdown": "markdown",
    ".txt": "text", ".text": "text", ".rst": "text",
}  # fmt: skip


@dataclass(frozen=True)
class _Passage:
    doc: int
    line: int
    text: str


def _load(path: Path, url: str) -> tuple[Page, str]:
    raw = path.read_bytes().decode("utf-8", "replace")
    kind = KINDS[path.suffix.lower()]
    if kind == "html":
        page = html_to_page(raw, url)
    elif kind == "markdown":
        page = markdown_to_page(raw, url)
    else:
        page = text_to_page(raw, url)
    if not page.title or page.title == url:
        page.title = path.stem
    return page, raw


def _passages(doc: int, page: Page, max_lines: int) -> list[_Passage]:
    """Runs of consecutive non-empty lines (at most `max_lines` each), link markup reduced to its text."""
    found: list[_Passage] = []
    start, chunk = 0, list[str]()
    for i, line in enumerate([*page.lines, ""]):
        if line.strip() and len(chunk) < max_lines:
            if not chunk:
                start = i
            chunk.append(line)
            continue
        if chunk:
            found.append(_Passage(doc, start, LINK_PATTERN.sub(r"\g<text>", " ".join(s.strip() for s in chunk))))
        chunk, start = ([line], i) if line.strip() else ([], i)
    return found


class LocalIndex(Backend):
    """Search and open the HTML / Markdown / text files under `root` (recursively, hidden entries skipped)."""

    source = "web"

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        base_url: str | None = None,
        max_file_bytes: int = 8 << 20,
        max_files: int = 50_000,
        passage_lines: int = 8,
    ) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ValueError(f"browser index folder {str(root)!r} is not a directory")
        self.base_url = base_url.rstrip("/") + "/" if base_url else None
        self.pages: dict[str, Page] = {}
        self._sources: dict[str, str] = {}
        self._order: list[str] = []
        self._passages: list[_Passage] = []
        for path in self._files(max_files, max_file_bytes):
            self._add(path, passage_lines)
        self._tokenizer = Tokenizer(stopwords="en", lower=True)
        self._bm25: bm25s.BM25 | None = None
        if self._passages:
            texts = [f"{self.pages[self._order[p.doc]].title} {p.text}" for p in self._passages]
            ids = self._tokenizer.tokenize(texts, show_progress=False, return_as="ids")
            self._bm25 = bm25s.BM25()
            self._bm25.index(ids, show_progress=False)

    def _files(self, max_files: int, max_file_bytes: int) -> list[Path]:
        found: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if name.startswith(".") or path.suffix.lower() not in KINDS:
                    continue
                real = path.resolve()
                if not real.is_relative_to(self.root) or not real.is_file():
                    continue  # a symlink out of the folder is not part of the index
                if real.stat().st_size > max_file_bytes:
                    continue
                found.append(path)
                if len(found) >= max_files:
                    return found
        return found

    def url_for(self, path: Path) -> str:
        if self.base_url is None:
            return path.absolute().as_uri()
        return self.base_url + quote(path.relative_to(self.root).as_posix())

    def _add(self, path: Path, passage_lines: int) -> None:
        url = self.url_for(path)
        page, raw = _load(path, url)
        self.pages[url] = page
        self._sources[url] = raw
        self._order.append(url)
        self._passages += _passages(len(self._order) - 1, page, passage_lines)

    def handles(self, url: str) -> bool:
        return urldefrag(url).url in self.pages

    async def search(self, query: str, topn: int) -> list[SearchResult]:
        if self._bm25 is None:
            return []
        tokens = self._tokenizer.tokenize([query], update_vocab=False, show_progress=False, return_as="ids")
        k = min(len(self._passages), max(topn * 8, 32))
        hits, scores = self._bm25.retrieve(tokens, k=k, show_progress=False)
        results: list[SearchResult] = []
        seen: set[int] = set()
        for index, score in zip(hits[0].tolist(), scores[0].tolist(), strict=True):
            passage = self._passages[index]
            if score <= 0 or passage.doc in seen:
                continue
            seen.add(passage.doc)
            url = self._order[passage.doc]
            results.append(SearchResult(self.pages[url].title, url, passage.text, passage.line))
            if len(results) >= topn:
                break
        return results

    async def fetch(self, url: str, *, view_source: bool = False) -> Page:
        key = urldefrag(url).url
        page = self.pages.get(key)
        if page is None:
            raise BackendError(f"`{url}` is not in the local index.")
        if view_source:
            return source_page(self._sources[key], key, page.title)
        return page
