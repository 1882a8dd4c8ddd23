"""Citations in the model's answer, `【{cursor}†L{a}(-L{b})?】`, as Responses API `url_citation` annotations.

Each citation whose cursor is a citable page becomes a markdown link `([domain](url))` in the cleaned text (a
space is put before it unless one is there), and an annotation whose start/end indices are character offsets of
that link in the cleaned text (Python string indices, i.e. code points, as the Responses API counts). Citations
of unknown cursors or of search results pages stay as written, with no annotation. `split_pending()` lets a
streaming caller hold back a citation that has started but not finished.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gptoss.tools.browser.page import domain_of

CITATION_PATTERN = re.compile(r"【(?P<cursor>\d+)†(?P<lines>[^†】]+)(?:†[^†】]*)?】")
_PENDING = re.compile(r"【\d*(?:†[^†】]*(?:†[^†】]*)?)?$")

Resolver = Callable[[int], tuple[str, str] | None]  # cursor -> (url, title)


@dataclass(frozen=True)
class UrlCitation:
    start_index: int
    end_index: int
    url: str
    title: str

    def to_dict(self) -> dict[str, Any]:
        """The Responses API annotation object."""
        return {
            "type": "url_citation",
            "start_index": self.start_index,
            "end_index": self.end_index,
            "url": self.url,
            "title": self.title,
        }


def resolve_citations(text: str, resolve: Resolver) -> tuple[str, list[UrlCitation]]:
    """Replace the citations `resolve` knows by markdown links; return the new text and the annotations."""
    out: list[str] = []
    annotations: list[UrlCitation] = []
    length, last, last_char = 0, 0, ""

    def emit(piece: str) -> None:
        nonlocal length, last_char
        if piece:
            out.append(piece)
            length += len(piece)
            last_char = piece[-1]

    for match in CITATION_PATTERN.finditer(text):
        emit(text[last : match.start()])
        last = match.end()
        target = resolve(int(match.group("cursor")))
        if target is None:
            emit(match.group(0))
            continue
        url, title = target
        if last_char and not last_char.isspace():
            emit(" ")
        link = f"([{domain_of(url) or title}]({url}))"
        annotations.append(UrlCitation(length, length + len(link), url, title))
        emit(link)
    emit(text[last:])
    return "".join(out), annotations


def split_pending(text: str) -> tuple[str, str]:
    """(text safe to emit now, a trailing unfinished citation to hold back until more text arrives)."""
    match = _PENDING.search(text)
    if match is None:
        return text, ""
    return text[: match.start()], text[match.start() :]
