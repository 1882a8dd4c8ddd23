"""Pages as the browser shows them: text with `【{id}†{text}】` links, wrapped at 80 columns, numbered `L{n}: `.

HTML goes through lxml (parsing real-world markup, rewriting links and images, dropping math) and then html2text
(block layout: headings, lists, paragraphs), the same pair the reference browser uses, so pages look like what
gpt-oss saw in training. Markdown keeps its text; its links and images are rewritten the same way. `【】` in the
source become `〖〗` so that only the browser's own links use the link brackets.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urljoin, urlsplit

import html2text
import lxml.etree
import lxml.html

WRAP_WIDTH = 80
LINK_PATTERN = re.compile(r"【(?P<id>\d+)†(?P<text>[^†】]*)(?:†[^†】]*)?】")  # a link in page text
_SPECIAL_CHARS = str.maketrans({"【": "〖", "】": "〗", "\u200b": None})
_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]*)(?:\s+\"[^\"]*\")?\)")
_MD_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
_SUP = re.compile(r"<sup( [^>]*)?>([\w\-]+)</sup>")
_SUB = re.compile(r"<sub( [^>]*)?>([\w\-]+)</sub>")
_TAGS_BETWEEN_WORDS = re.compile(r"(?<=\w)((<[^>]*>)+)(?=\w)")
_BLANK_LINE = re.compile(r"^[ \t]+$", flags=re.MULTILINE)
_MANY_NEWLINES = re.compile(r"\n(\s*\n)+")
_UNBREAKABLE = re.compile(r"[^\t\n\x0b\x0c\r -]+")  # no place textwrap breaks at: its whitespace, hyphens


class PageKind(StrEnum):
    PAGE = "page"
    SEARCH = "search"  # a search results page: links to results
    FIND = "find"  # results of `find` in a page: links back into that page


@dataclass
class Page:
    url: str  # "" for search results
    title: str
    text: str
    links: dict[int, str] = field(default_factory=dict)  # link id -> absolute URL
    kind: PageKind = PageKind.PAGE
    targets: dict[int, int] = field(default_factory=dict)  # link id -> line to open that link at
    cite_url: str | None = None  # what a citation of this page points to (None: not citable)
    cite_title: str | None = None  # the title for that citation (default: this page's)
    _lines: list[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.cite_url is None and self.kind is PageKind.PAGE and self.url:
            self.cite_url = self.url

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = wrap_lines(self.text)
        return self._lines


def wrap_lines(text: str, width: int = WRAP_WIDTH) -> list[str]:
    """Split on newlines and wrap each line at `width`, keeping whitespace and empty lines."""
    lines: list[str] = []
    for line in text.split("\n"):
        if not line:
            lines.append("")
        elif len(line) > width and _UNBREAKABLE.fullmatch(line):
            # textwrap would cut this one word into the same slices, copying the rest after each cut: 1.5 s for 2 MiB
            lines += [line[i : i + width] for i in range(0, len(line), width)]
        else:
            lines += textwrap.wrap(line, width=width, replace_whitespace=False, drop_whitespace=False) or [""]
    return lines


def domain_of(url: str) -> str:
    """The host (and port) of a URL; for a bare host without a scheme, that host; "" for file URLs."""
    if not url:
        return ""
    return urlsplit(url if "://" in url else "//" + url).netloc


def merge_whitespace(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\n", " "))


class _LinkTable:
    """Assigns link ids in order of first appearance; the same URL keeps its id."""

    def __init__(self, page_url: str) -> None:
        self.page_url, self.page_domain = page_url, domain_of(page_url)
        self.links: dict[int, str] = {}
        self._ids: dict[str, int] = {}

    def anchor(self, href: str, text: str) -> str | None:
        """The `【id†text(†domain)】` replacing a link, or None if it is not a followable link."""
        href = href.strip()
        if not href or href.startswith(("#", "mailto:", "javascript:", "data:", "tel:")):
            return None
        try:
            url = urljoin(self.page_url, href) if self.page_url else href
            parts = urlsplit(url)
        except ValueError:
            return None
        if parts.scheme not in ("http", "https", "file"):
            return None
        link_id = self._ids.setdefault(url, len(self._ids))
        self.links[link_id] = url
        text = text.replace("†", "‡").strip() or url
        domain = domain_of(url)
        return f"【{link_id}†{text}】" if domain == self.page_domain else f"【{link_id}†{text}†{domain}】"


class _Text(html2text.HTML2Text):
    """html2text without markdown escaping: the model reads plain text, not markdown source."""

    def handle_data(self, data: str, entity_char: bool = False) -> None:
        super().handle_data(data, entity_char=True)  # entity_char=True only turns off escape_md_section


def _replace_node(node: lxml.html.HtmlElement, text: str) -> None:
    """Replace `node` by `text`, keeping the text that followed it."""
    parent, previous = node.getparent(), node.getprevious()
    if parent is None:
        return
    tail = node.tail or ""
    if previous is None:
        parent.text = (parent.text or "") + text + tail
    else:
        previous.tail = (previous.tail or "") + text + tail
    parent.remove(node)


def _layout(html: str) -> str:
    converter = _Text()
    converter.ignore_links = True
    converter.ignore_images = True
    converter.ignore_tables = True
    converter.ignore_emphasis = True
    converter.unicode_snob = True
    converter.body_width = 0
    return converter.handle(html).strip()


def html_to_page(html: str, url: str, title: str | None = None) -> Page:
    """An HTML document as a browser page (links numbered from 0 in document order)."""
    html = _XML_DECLARATION.sub("", html)  # lxml refuses str input that declares an encoding
    html = _SUP.sub(r"^{\2}", html.translate(_SPECIAL_CHARS))
    html = _TAGS_BETWEEN_WORDS.sub(r" \1", _SUB.sub(r"_{\2}", html))
    try:
        root = lxml.html.fromstring(html)
    except (lxml.etree.ParserError, ValueError):
        return Page(url=url, title=title or domain_of(url), text="")
    found_title = root.find(".//title")
    page_title = title or (found_title.text_content().strip() if found_title is not None else "") or domain_of(url)
    for node in root.xpath(".//script|.//style|.//noscript|.//template|.//math|.//svg"):
        _replace_node(node, "")
    table = _LinkTable(url)
    for a in root.xpath(".//a[@href]"):
        text = merge_whitespace(a.text_content()).strip()
        anchor = table.anchor(a.get("href", ""), text) if text else None
        if anchor is not None:
            _replace_node(a, anchor)
    for n, img in enumerate(root.xpath(".//img")):
        name = img.get("alt") or img.get("title")
        _replace_node(img, f"[Image {n}: {name}]" if name else f"[Image {n}]")
    text = _layout(lxml.etree.tostring(root, encoding="unicode"))
    text = _MANY_NEWLINES.sub("\n\n", _BLANK_LINE.sub("", text))
    return Page(url=url, title=merge_whitespace(page_title).strip(), text=text, links=table.links)


def markdown_to_page(markdown: str, url: str, title: str | None = None) -> Page:
    """A Markdown document as a page: text kept, `[text](url)` links numbered, images as `[Image n: alt]`."""
    text = markdown.translate(_SPECIAL_CHARS).replace("\r\n", "\n")
    table = _LinkTable(url)
    counter = iter(range(1 << 30))
    text = _MD_IMAGE.sub(lambda m: f"[Image {next(counter)}: {m.group(1)}]" if m.group(1) else "[Image]", text)
    text = _MD_LINK.sub(lambda m: table.anchor(m.group(2), merge_whitespace(m.group(1))) or m.group(1), text)
    heading = re.search(r"^#\s+(.+)$", markdown, flags=re.MULTILINE)
    page_title = title or (heading.group(1).strip() if heading else "") or domain_of(url)
    return Page(url=url, title=page_title, text=_MANY_NEWLINES.sub("\n\n", text).strip(), links=table.links)


def text_to_page(text: str, url: str, title: str | None = None) -> Page:
    """Plain text as a page (no links)."""
    text = text.translate(_SPECIAL_CHARS).replace("\r\n", "\n").strip()
    first = next((line.strip() for line in text.split("\n") if line.strip()), "")
    return Page(url=url, title=title or first[:80] or domain_of(url), text=text)


def source_page(source: str, url: str, title: str | None = None) -> Page:
    """`view_source`: the raw document, brackets escaped, no links."""
    return Page(url=f"view-source:{url}", title=title or url, text=source.translate(_SPECIAL_CHARS))
