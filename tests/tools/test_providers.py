"""Exa and You.com clients against a fake API on loopback: requests as the reference sends them, results
rendered as browser pages, API failures as tool messages."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from gptoss.harmony import Author, Message, Role
from gptoss.tools.browser import BackendError, BrowserTool, ExaBackend, YouComBackend

RESULT_HTML = "<html><title>Ignored</title><body><p>Article body with <a href='/more'>more</a>.</p></body></html>"


class FakeApi(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []
    status = 200

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, payload: object) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        parts = urlsplit(self.path)
        entry = {"method": self.command, "path": parts.path, "query": parse_qs(parts.query), "body": body,
                 "key": self.headers.get("x-api-key"), "agent": self.headers.get("user-agent")}  # fmt: skip
        type(self).requests.append(entry)
        return entry

    def do_GET(self) -> None:
        entry = self._record()
        if entry["path"] == "/v1/search":
            self._reply(
                {
                    "results": {
                        "web": [{"title": "Web one", "url": "https://one.example/a", "snippets": ["first", "part"]}],
                        "news": [{"title": "News two", "url": "https://two.example/b", "description": "fresh"}],
                    }
                }
            )
        else:
            self._reply({"error": "no route"})

    def do_POST(self) -> None:
        entry = self._record()
        if entry["path"] == "/search":
            if entry["body"]["query"] == "broken":
                self._reply(b"this is not json")
                return
            results = [
                {"title": "Exa one", "url": "https://one.example/a", "summary": "Summary 【one】"},
                {"title": "Exa two", "url": "https://two.example/b", "summary": "Second"},
            ]
            self._reply({"results": results})
        elif entry["path"] == "/contents":
            self._reply({"results": [{"title": "Exa page", "url": entry["body"]["urls"][0], "text": RESULT_HTML}]})
        elif entry["path"] == "/v1/contents":
            self._reply([{"url": entry["body"]["urls"][0], "title": "You page", "html": RESULT_HTML}])
        else:
            self._reply({"error": "no route"})


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def fresh_log() -> None:
    FakeApi.requests = []
    FakeApi.status = 200


def test_exa_search_and_open(api: str) -> None:
    browser = BrowserTool(ExaBackend("exa-key", base_url=api))
    text = asyncio.run(browser.search("sandboxes", 5))
    assert text == (
        "[0] sandboxes\n**viewing lines [0 - 3] of 3**\n\n"
        "L0: # Search Results\nL1: \n"
        "L2:   * 【0†Exa one†one.example】 Summary 〖one〗\n"
        "L3:   * 【1†Exa two†two.example】 Second"
    )
    [search] = FakeApi.requests
    assert search["method"] == "POST" and search["path"] == "/search"
    assert search["body"] == {"query": "sandboxes", "numResults": 5, "contents": {"text": True, "summary": True}}
    assert search["key"] == "exa-key" and search["agent"].startswith("gpt-oss/")
    page = asyncio.run(browser.open(1))
    assert page == (
        "[1] Exa page (https://two.example/b)\n**viewing lines [0 - 0] of 0**\n\nL0: Article body with 【0†more】."
    )
    assert FakeApi.requests[1]["body"] == {"urls": ["https://two.example/b"], "text": {"includeHtmlTags": True}}
    assert browser.page().links == {0: "https://two.example/more"}


def test_youcom_search_and_open(api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YDC_API_KEY", "ydc-key")
    browser = BrowserTool(YouComBackend(base_url=api))
    text = asyncio.run(browser.search("news", 10))
    assert "L2:   * 【0†Web one†one.example】 first part\nL3:   * 【1†News two†two.example】 fresh" in text
    [search] = FakeApi.requests
    assert search["method"] == "GET" and search["path"] == "/v1/search"
    assert search["query"] == {"query": ["news"], "count": ["10"]} and search["key"] == "ydc-key"
    opened = asyncio.run(browser.open(0))
    assert opened.startswith("[1] You page (https://one.example/a)")
    assert FakeApi.requests[1]["body"] == {"urls": ["https://one.example/a"], "livecrawl_formats": "html"}
    source = asyncio.run(browser.open(0, cursor=0, view_source=True))
    assert source.startswith("[2] You page (view-source:https://one.example/a)") and "<title>Ignored</title>" in source


def test_topn_is_capped(api: str) -> None:
    browser = BrowserTool(ExaBackend("k", base_url=api), max_search_results=3)
    asyncio.run(browser.search("x", 50))
    assert FakeApi.requests[0]["body"]["numResults"] == 3


def call(function: str, args: str) -> Message:
    return Message.from_author_and_content(Author.new(Role.ASSISTANT), args).with_recipient(f"browser.{function}")


def text_of(browser: BrowserTool, message: Message) -> str:
    [reply] = asyncio.run(browser.process(message))
    return reply.content[0].text  # type: ignore[union-attr]


def test_api_failures_are_tool_messages(api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXA_API_KEY", raising=False)
    no_key = BrowserTool(ExaBackend(base_url=api))
    assert text_of(no_key, call("search", '{"query": "q"}')) == (
        "Error during search for `q`: Exa API key not provided (set EXA_API_KEY)."
    )
    assert FakeApi.requests == []  # nothing is sent without a key
    browser = BrowserTool(ExaBackend("k", base_url=api))
    assert text_of(browser, call("search", '{"query": "broken"}')) == (
        "Error during search for `broken`: Exa API returned something that is not JSON."
    )
    FakeApi.status = 401
    assert text_of(browser, call("search", '{"query": "q"}')).startswith(
        "Error during search for `q`: Exa API error 401"
    )
    unreachable = BrowserTool(YouComBackend("k", base_url="http://127.0.0.1:9"))
    assert text_of(unreachable, call("search", '{"query": "q"}')).startswith(
        "Error during search for `q`: You.com request failed: ConnectError"
    )


def test_backend_errors_are_exceptions_at_the_backend_level(api: str) -> None:
    backend = ExaBackend("k", base_url=api)
    FakeApi.status = 500
    with pytest.raises(BackendError, match="Exa API error 500"):
        asyncio.run(backend.fetch("https://one.example/a"))
