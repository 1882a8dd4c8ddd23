"""The browser over the offline local index: page rendering, search, open, paging, find, cursors, bad input."""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from gptoss.harmony import Author, Message, Role, ToolNamespaceConfig, o200k_harmony
from gptoss.tools.browser import BrowserTool, LocalIndex, PageKind, SearchResult, html_to_page, markdown_to_page
from gptoss.tools.browser.backend import Backend
from gptoss.tools.browser.page import Page, text_to_page, wrap_lines
from tests.tools.conftest import DOCS

BASE = "https://docs.example.com/"


def run(coro: object) -> str:
    return asyncio.run(coro)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def index(docs_dir: Path) -> LocalIndex:
    return LocalIndex(docs_dir, base_url=BASE)


@pytest.fixture
def browser(index: LocalIndex) -> BrowserTool:
    return BrowserTool(index)


def call(function: str, args: object, channel: str = "analysis") -> Message:
    text = args if isinstance(args, str) else json.dumps(args)
    message = Message.from_author_and_content(Author.new(Role.ASSISTANT), text)
    return message.with_recipient(f"browser.{function}").with_channel(channel)


def reply(browser: BrowserTool, function: str, args: object) -> str:
    [message] = asyncio.run(browser.process(call(function, args)))
    assert message.author == Author(Role.TOOL, f"browser.{function}")
    assert message.recipient == "assistant" and message.channel == "analysis"
    return message.content[0].text  # type: ignore[union-attr]


# -- page rendering ---------------------------------------------------------------------------------------------


def test_html_rendering() -> None:
    page = html_to_page(DOCS["guide.html"], BASE + "guide.html")
    assert page.title == "Sandbox guide"
    assert page.text == (
        "# Sandboxing with bubblewrap\n\n"
        "Bubblewrap builds a sandbox from namespaces. Read 【0†the limits notes】, the "
        "【1†upstream page†example.org】 or the top.\n\n"
        "  * 1. unshare the network\n"
        "  * - bind /usr read-only\n\n"
        "An [Image 0: architecture diagram] image and one [Image 1] without alt.\n\n"
        "Chemistry: H_{2}O, maths: x^{2}, brackets: 〖not a link〗 and a dagger † here."
    )
    assert page.links == {0: BASE + "notes/limits.md", 1: "https://example.org/bwrap"}
    assert page.kind is PageKind.PAGE and page.cite_url == BASE + "guide.html"


def test_html_edge_cases() -> None:
    page = html_to_page(
        '<title> T </title><p><a href="/a">dup</a> <a href="/a">again</a> <a href="mailto:x@y">mail</a> '
        '<a href="javascript:alert(1)">js</a> <a href="b">a†b</a><math><mi>x</mi></math></p>',
        "http://site.test/dir/page",
    )
    assert page.text == "【0†dup】 【0†again】 mail js 【1†a‡b】"
    assert page.links == {0: "http://site.test/a", 1: "http://site.test/dir/b"}
    assert page.title == "T"
    assert html_to_page("", "http://site.test/").text == ""
    assert html_to_page("   ", "http://site.test/x").title == "site.test"


def test_markdown_rendering() -> None:
    page = markdown_to_page(DOCS["notes/limits.md"], BASE + "notes/limits.md")
    assert page.title == "Resource limits"
    assert page.text == (
        "# Resource limits\n\n"
        "RLIMIT_NPROC is ignored for processes whose real uid is 0, so every slot gets its own uid.\n"
        "See 【0†the guide】 and [Image 0: a chart].\n\n"
        "CPU time is limited with RLIMIT_CPU; memory with RLIMIT_AS."
    )
    assert page.links == {0: BASE + "guide.html"}


def test_wrapping_keeps_whitespace_and_empty_lines() -> None:
    line = "word " * 30
    lines = wrap_lines(f"{line}\n\n  indented")
    assert all(len(x) <= 80 for x in lines)
    assert "".join(lines[:-2]) == line
    assert lines[-2:] == ["", "  indented"]


@pytest.mark.parametrize("length", [1, 79, 80, 81, 160, 1000, 4321])
@pytest.mark.parametrize("char", ["a", "é", "【", "\u00a0", "_"])
def test_unbreakable_lines_wrap_exactly_as_textwrap(length: int, char: str) -> None:
    line = (char + "bc") * (length // 3 + 1)
    expected = textwrap.wrap(line, width=80, replace_whitespace=False, drop_whitespace=False)
    assert wrap_lines(line) == expected


class HugeLineBackend(Backend):
    """One page of a single 2 MiB line that textwrap cuts slowly (a hyphen keeps it off the fast path)."""

    def handles(self, url: str) -> bool:
        return True

    async def fetch(self, url: str, *, view_source: bool = False) -> Page:
        return text_to_page("x" * (2 << 20) + "-tail", url)


def test_rendering_a_huge_line_does_not_block_the_event_loop() -> None:
    async def open_while_ticking() -> tuple[str, float]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def tick() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticker = asyncio.ensure_future(tick())
        text = await BrowserTool(HugeLineBackend()).open("https://huge.test/")
        done.set()
        await ticker
        return text, max(gaps)

    text, worst_gap = asyncio.run(open_while_ticking())
    assert text.startswith("[0] " + "x" * 80)
    assert "L0: " + "x" * 80 in text
    assert worst_gap < 0.5, f"the event loop stalled for {worst_gap:.2f} s"


# -- the index --------------------------------------------------------------------------------------------------


def test_index_holds_only_documents_in_the_folder(docs_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.md"
    outside.write_text("# Outside\n\nsecret outside words\n")
    link = docs_dir / "link.md"
    link.symlink_to(outside)
    try:
        index = LocalIndex(docs_dir)
    finally:
        link.unlink()
    names = sorted(Path(url.removeprefix("file://")).relative_to(docs_dir).as_posix() for url in index.pages)
    assert names == ["cats.txt", "guide.html", "long.txt", "notes/limits.md"]
    assert run(index.search("secret hidden outside", 5)) == []
    with pytest.raises(ValueError, match="is not a directory"):
        LocalIndex(docs_dir / "cats.txt")


def test_search_results_page(browser: BrowserTool) -> None:
    text = reply(browser, "search", {"query": "RLIMIT_NPROC uid"})
    assert text == (
        "[0] RLIMIT_NPROC uid\n"
        "**viewing lines [0 - 4] of 4**\n\n"
        "L0: # Search Results\n"
        "L1: \n"
        "L2:   * 【0†Resource limits†docs.example.com】 RLIMIT_NPROC is ignored for processes \n"
        "L3: whose real uid is 0, so every slot gets its own uid. See the guide and [Image 0:\n"
        "L4:  a chart]."
    )
    page = browser.page(0)
    assert page.kind is PageKind.SEARCH and page.links == {0: BASE + "notes/limits.md"}
    assert browser.citation_target(0) is None  # a results page is not a source


def test_search_ranks_and_honours_topn(browser: BrowserTool) -> None:
    run(browser.search("cats dogs park", 10))
    assert browser.page().links[0] == BASE + "cats.txt"
    run(browser.search("the", 10))  # only stop words: nothing matches
    assert "No results for `the`." in browser.page().text
    run(browser.search("sandbox bubblewrap namespaces limits guide", 1))
    assert len(browser.page().links) == 1


def test_open_result_lands_near_the_passage(browser: BrowserTool) -> None:
    run(browser.search("needle", 5))
    text = run(browser.open(0))
    lines = text.split("\n")
    assert lines[0] == f"[1] Long document ({BASE}long.txt)"
    first = int(lines[3].split(":")[0][1:])
    needle_line = next(i for i, line in enumerate(browser.page().lines) if "needle" in line)
    assert first == needle_line - 4
    assert "The needle is here." in text
    assert browser.citation_target(1) == (BASE + "long.txt", "Long document")


def test_views_are_token_bounded_and_scroll(browser: BrowserTool) -> None:
    run(browser.open(BASE + "long.txt"))
    text = run(browser.open(BASE + "long.txt"))  # a URL id opens again (a refresh): new cursor
    header, viewing, blank, *body = text.split("\n")
    assert header == f"[1] Long document ({BASE}long.txt)" and blank == ""
    total = len(browser.page().lines) - 1
    end = int(body[-1].split(":")[0][1:])
    assert viewing == f"**viewing lines [0 - {end}] of {total}**"
    tokens = len(o200k_harmony().encode_ordinary("\n".join(body)))
    assert 900 < tokens <= 1024 + 40  # one line past the budget is never added
    scrolled = run(browser.open(loc=end + 1))
    assert scrolled.split("\n")[0] == f"[2] Long document ({BASE}long.txt)"
    assert scrolled.split("\n")[3].startswith(f"L{end + 1}: ")
    three = run(browser.open(loc=5, num_lines=3, cursor=1))
    assert three.split("\n")[1] == f"**viewing lines [5 - 7] of {total}**"
    assert len(three.split("\n")) == 3 + 3


def test_follow_links_between_documents(browser: BrowserTool) -> None:
    run(browser.open(BASE + "guide.html"))
    text = run(browser.open(0))
    assert text.startswith(f"[1] Resource limits ({BASE}notes/limits.md)\n**viewing lines [0 - 6] of 6**\n\nL0: ")
    back = run(browser.open(0, cursor=1))
    assert back.startswith(f"[2] Sandbox guide ({BASE}guide.html)")
    assert run(browser.open(0, cursor=0)).startswith("[3] Resource limits")


def test_find(browser: BrowserTool) -> None:
    run(browser.open(BASE + "notes/limits.md"))
    text = run(browser.find("RLIMIT"))
    assert text == (
        f"[1] Find results for text: `RLIMIT` in `Resource limits` ({BASE}notes/limits.md/find?pattern=RLIMIT)\n"
        "**viewing lines [0 - 7] of 7**\n\n"
        "L0: # 【0†match at L2】\n"
        "L1: RLIMIT_NPROC is ignored for processes whose real uid is 0, so every slot gets \n"
        "L2: its own uid.\n"
        "L3: See the guide and [Image 0: a chart].\n"
        "L4: \n"
        "L5: \n"
        "L6: # 【1†match at L6】\n"
        "L7: CPU time is limited with RLIMIT_CPU; memory with RLIMIT_AS."
    )
    assert browser.citation_target(1) == (BASE + "notes/limits.md", "Resource limits")
    opened = run(browser.open(1))  # a find result opens the page a few lines above the match (L6)
    assert opened.split("\n")[:4] == [
        f"[2] Resource limits ({BASE}notes/limits.md)",
        "**viewing lines [2 - 6] of 6**",
        "",
        "L2: RLIMIT_NPROC is ignored for processes whose real uid is 0, so every slot gets ",
    ]
    assert "No `find` results for pattern: `zebra`" in run(browser.find("zebra", cursor=0))


def test_find_is_case_insensitive_and_ignores_link_markup(browser: BrowserTool) -> None:
    run(browser.open(BASE + "guide.html"))
    text = run(browser.find("LIMITS NOTES"))
    assert "# 【0†match at L2】" in text
    assert "L1: Bubblewrap builds a sandbox from namespaces. Read the limits notes, the \nL2: upstream page" in text


def test_view_source(browser: BrowserTool) -> None:
    run(browser.open(BASE + "guide.html"))
    text = run(browser.open(view_source=True))
    assert text.startswith(f"[1] Sandbox guide (view-source:{BASE}guide.html)")
    assert "<title>Sandbox guide</title>" in text and "〖not a link〗" in text
    assert "<script>" in text


def test_namespace_config_is_harmonys(browser: BrowserTool) -> None:
    assert browser.namespace_config() == ToolNamespaceConfig.browser()


# -- bad input: every path answers with a tool message -----------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "args", "expected"),
    [
        ("search", "{not json", "Invalid arguments for browser.search: not valid JSON (Expecting property name "
         "enclosed in double quotes at line 1 column 2). Send one JSON object, for example "
         '{"query": "bubblewrap sandbox"}.'),
        ("search", "[1, 2]", "Invalid arguments for browser.search: expected a JSON object, got list. Send one JSON "
         'object, for example {"query": "bubblewrap sandbox"}.'),
        ("search", {}, "Invalid arguments for browser.search: missing required field `query` (a string)."),
        ("search", {"query": 3}, "Invalid arguments for browser.search: `query` must be a string, got 3."),
        ("search", {"query": "  "}, "Invalid arguments for browser.search: `query` is empty."),
        ("search", {"query": "x", "topn": "many"}, 'Invalid arguments for browser.search: `topn` must be an '
         'integer, got "many".'),
        ("find", {}, "Invalid arguments for browser.find: missing required field `pattern` (a string)."),
        ("find", {"pattern": "x"}, "No pages to access! Use `browser.search` or open a URL first."),
        ("open", {}, "No pages to access! Use `browser.search` or open a URL first."),
        ("open", {"id": 1.5}, "Invalid arguments for browser.open: `id` must be an integer link number, got 1.5."),
        ("open", {"id": [1]}, "Invalid arguments for browser.open: `id` must be a link number or a URL, got [1]."),
        ("open", {"id": True}, "Invalid arguments for browser.open: `id` must be a link number or a URL, got true."),
        ("open", {"cursor": "x"}, 'Invalid arguments for browser.open: `cursor` must be an integer, got "x".'),
        ("open", {"id": "file:///etc/passwd"}, "Cannot open `file:///etc/passwd`: no configured source can open "
         "it (offline mode serves only the local index)."),
        ("open", {"id": "https://example.org/bwrap"}, "Cannot open `https://example.org/bwrap`: no configured "
         "source can open it (offline mode serves only the local index)."),
        ("open", {"id": "gopher://x"}, "Cannot open `gopher://x`: no configured source can open it (offline mode "
         "serves only the local index)."),
        ("fly", {}, "Unknown browser function `fly`: use browser.search, browser.open or browser.find."),
    ],
)  # fmt: skip
def test_bad_input_becomes_a_tool_message(browser: BrowserTool, function: str, args: object, expected: str) -> None:
    assert reply(browser, function, args) == expected
    assert browser.stack == []  # a failed call adds no page


def test_bad_cursor_link_and_location(browser: BrowserTool) -> None:
    reply(browser, "open", {"id": BASE + "cats.txt"})
    assert reply(browser, "open", {"cursor": 5}) == "Cursor `5` is out of range. Available cursor indices: [0 - 0]."
    assert reply(browser, "open", {"cursor": -2}) == "Cursor `-2` is out of range. Available cursor indices: [0 - 0]."
    assert reply(browser, "open", {"id": 7}) == "Invalid link id `7`: the page at this cursor has no links."
    assert reply(browser, "open", {"loc": 99}) == "Invalid location parameter: `99`. Cannot exceed page maximum of 2."
    reply(browser, "search", {"query": "cats"})
    assert reply(browser, "open", {"id": 4}) == "Invalid link id `4`. Valid link ids on this page: 0 to 0."
    assert reply(browser, "find", {"pattern": "x"}) == "Cannot run `find` on search results page or find results page"
    assert reply(browser, "open", {"view_source": True}) == "Cannot view the source of a search or find results page."
    assert len(browser.stack) == 2
    assert reply(browser, "open", {"id": "0"}).startswith("[2] Cats and dogs")  # "0" is a link number


def test_file_urls_without_base_url(docs_dir: Path) -> None:
    browser = BrowserTool(LocalIndex(docs_dir))
    text = run(browser.search("cats", 3))
    assert "【0†Cats and dogs】" in text  # no domain for local files
    opened = run(browser.open(0))
    assert opened.startswith(f"[1] Cats and dogs ({(docs_dir / 'cats.txt').as_uri()})")
    assert os.path.isabs(browser.page().url.removeprefix("file://"))


def test_xhtml_with_an_xml_declaration() -> None:
    page = html_to_page('<?xml version="1.0" encoding="utf-8"?>\n<html><body><p>XHTML body</p></body></html>', BASE)
    assert page.text == "XHTML body"


class BrokenBackend(LocalIndex):
    async def search(self, query: str, topn: int) -> list[SearchResult]:
        raise RuntimeError("index exploded")


def test_unexpected_backend_failures_become_messages(docs_dir: Path) -> None:
    browser = BrowserTool(BrokenBackend(docs_dir))
    assert reply(browser, "search", {"query": "x"}) == (
        "Error: browser.search failed unexpectedly (RuntimeError: index exploded)."
    )


def test_num_lines_is_capped_by_the_hard_token_limit(browser: BrowserTool) -> None:
    text = run(browser.open(BASE + "long.txt", num_lines=100_000))
    body = text.split("\n")[3:]
    assert 3000 < len(o200k_harmony().encode_ordinary("\n".join(body))) <= 4096 + 40
    assert len(body) < len(browser.page().lines)


def test_fragments_open_the_indexed_page(browser: BrowserTool) -> None:
    assert run(browser.open(BASE + "guide.html#top")).startswith(f"[0] Sandbox guide ({BASE}guide.html)\n")
