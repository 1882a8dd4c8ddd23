"""Citations `【cursor†Lx-Ly】` -> markdown links + url_citation annotations with offsets into the cleaned text."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gptoss.tools.browser import BrowserTool, LocalIndex
from gptoss.tools.citations import UrlCitation, resolve_citations, split_pending

TARGETS = {1: ("https://a.example/x?q=1", "Page A"), 2: ("https://b.example/", "Page B")}


def resolve(text: str) -> tuple[str, list[UrlCitation]]:
    return resolve_citations(text, TARGETS.get)


def test_citations_become_links_with_exact_offsets() -> None:
    text, notes = resolve("Fact one【1†L3-L5】. Café ☕ fact two 【2†L1】 and unknown【9†L1】.")
    assert text == (
        "Fact one ([a.example](https://a.example/x?q=1)). Café ☕ fact two ([b.example](https://b.example/)) "
        "and unknown【9†L1】."
    )
    assert [n.to_dict() for n in notes] == [
        {"type": "url_citation", "start_index": 9, "end_index": 47, "url": "https://a.example/x?q=1",
         "title": "Page A"},
        {"type": "url_citation", "start_index": 65, "end_index": 98, "url": "https://b.example/", "title": "Page B"},
    ]  # fmt: skip
    for note in notes:
        assert text[note.start_index : note.end_index] == f"([{note.url.split('/')[2]}]({note.url}))"


def test_citation_forms() -> None:
    assert resolve("【1†L2】 starts")[0] == "([a.example](https://a.example/x?q=1)) starts"  # no space added at start
    assert resolve("with domain【2†L2†b.example】")[0] == "with domain ([b.example](https://b.example/))"
    assert resolve("two in a row【1†L1】【2†L2】")[0] == (
        "two in a row ([a.example](https://a.example/x?q=1)) ([b.example](https://b.example/))"
    )
    assert resolve("not citations: 【1】 【†L1】 【x†L1】") == ("not citations: 【1】 【†L1】 【x†L1】", [])
    assert resolve("") == ("", [])


def test_split_pending_holds_back_an_unfinished_citation() -> None:
    assert split_pending("text 【1†L") == ("text ", "【1†L")
    assert split_pending("text 【") == ("text ", "【")
    assert split_pending("text 【12") == ("text ", "【12")
    assert split_pending("done【1†L2】") == ("done【1†L2】", "")
    assert split_pending("plain") == ("plain", "")


def test_citations_of_real_browser_pages(docs_dir: Path) -> None:
    browser = BrowserTool(LocalIndex(docs_dir, base_url="https://docs.example.com/"))
    asyncio.run(browser.search("RLIMIT_NPROC", 3))  # cursor 0: results page, not citable
    asyncio.run(browser.open(0))  # cursor 1: notes/limits.md
    asyncio.run(browser.find("RLIMIT"))  # cursor 2: find results cite the page they searched
    text, notes = resolve_citations("NPROC is ignored for root【1†L2-L3】, see also【2†L1】 and【0†L2】.",
                                    browser.citation_target)  # fmt: skip
    url = "https://docs.example.com/notes/limits.md"
    assert text == (
        f"NPROC is ignored for root ([docs.example.com]({url})), see also ([docs.example.com]({url})) and【0†L2】."
    )
    assert [(n.url, n.title) for n in notes] == [(url, "Resource limits"), (url, "Resource limits")]
