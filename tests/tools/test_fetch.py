"""The SSRF guard of the web fetcher. Everything stays on loopback: DNS is a fake resolver, and the only transport
maps two "public" addresses to a fake HTTP server on 127.0.0.1 (any other address raises, so no packet can leave).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from gptoss.harmony import Author, Message, Role
from gptoss.tools import BuiltinTools
from gptoss.tools.browser import BrowserTool, UrlRefused, WebFetcher
from gptoss.tools.browser.backend import BackendError

PUBLIC = "93.184.216.34"  # stands for a public server; the router below sends it to loopback
PUBLIC2 = "93.184.216.35"


class FakeSite(BaseHTTPRequestHandler):
    port = 0
    hits = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        type(self).hits += 1
        path = self.path
        loopback = f"http://127.0.0.1:{self.port}/page"
        redirects = {
            "/to-loopback": loopback,
            "/to-metadata": "http://169.254.169.254/latest/meta-data/",
            "/to-private-name": "http://intranet.test/",
            "/to-public": "http://second.test/page",
            "/relative": "/page",
            "/loop": "/loop",
            "/to-file": "file:///etc/passwd",
        }
        if path in redirects:
            self.send_response(302)
            self.send_header("Location", redirects[path])
            self.end_headers()
            return
        if path == "/slow":
            time.sleep(3)
        bodies = {
            "/page": ("text/html; charset=utf-8", f"<title>Fake</title><p>Host: {self.headers['Host']}</p>"),
            "/slow": ("text/html", "<p>late</p>"),
            "/text": ("text/plain", "plain words"),
            "/md": ("text/markdown", "# Title\n\n[link](/page)"),
            "/image": ("image/png", "\x89PNG"),
            "/big": ("text/plain", "x" * 300_000),
        }
        if path not in bodies:
            self.send_response(404)
            self.end_headers()
            return
        content_type, body = bodies[path]
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def site() -> Iterator[type[FakeSite]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeSite)
    FakeSite.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield FakeSite
    server.shutdown()
    server.server_close()


class Router(httpx.AsyncBaseTransport):
    """Sends requests for the fake public addresses to the fake site; anything else is a test failure."""

    def __init__(self, port: int) -> None:
        self.routes = {PUBLIC: port, PUBLIC2: port}
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        port = self.routes.get(request.url.host)
        if port is None:
            raise AssertionError(f"connection to an unrouted address: {request.url}")
        url = request.url.copy_with(scheme="http", host="127.0.0.1", port=port)
        extensions = {k: v for k, v in request.extensions.items() if k != "sni_hostname"}
        forwarded = httpx.Request(request.method, url, headers=request.headers, extensions=extensions)
        return await self.inner.handle_async_request(forwarded)


class FakeDNS:
    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answers = self.answers.get(host)
        if answers is None:
            raise OSError(f"no such host {host}")
        return answers[0] if len(answers) == 1 else answers.pop(0)


def make(site: type[FakeSite], **kwargs: object) -> tuple[WebFetcher, Router, FakeDNS]:
    dns = FakeDNS(
        {
            "public.test": [[PUBLIC]],
            "second.test": [[PUBLIC2]],
            "rebind.test": [[PUBLIC], ["127.0.0.1"]],
            "loopback-name.test": [["127.0.0.1"]],
            "127.0.0.1.nip.io": [["127.0.0.1"]],
            "intranet.test": [["10.1.2.3"]],
            "mixed.test": [[PUBLIC, "192.168.0.7"]],
            "v6-loopback.test": [["::1"]],
            "v6-mapped.test": [["::ffff:10.0.0.1"]],
            "link-local.test": [["fe80::1%2"]],
            "metadata.test": [["169.254.169.254"]],
        }
    )
    router = Router(site.port)
    fetcher = WebFetcher(resolver=dns, transport=router, **kwargs)  # type: ignore[arg-type]
    return fetcher, router, dns


TRICKS = [
    "http://127.0.0.1/",
    "http://127.0.0.1:{port}/page",
    "http://localhost:{port}/page",
    "http://localhost./",
    "http://LOCALHOST/",
    "http://api.localhost/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://0x7f.0.0.1/",
    "http://127.1/",
    "http://127.0.1/",
    "http://0/",
    "http://0.0.0.0/",
    "http://[::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::]/",
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://10.0.0.1/",
    "http://192.168.1.1/",
    "http://172.16.0.1/",
    "http://100.64.0.1/",
    "http://198.18.0.1/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://user:pass@public.test/",
    "http://public.test@127.0.0.1/",
    "http://public.test\\@127.0.0.1/",
    "http://127.0.0.1#@public.test/",
    "http:// 127.0.0.1/",
    "http://１２７.０.０.１/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:25/",
    "ftp://public.test/",
    "data:text/html,hi",
    "http://metadata.google.internal/",
    "http://printer.local/",
    "http://loopback-name.test/",
    "http://127.0.0.1.nip.io/",
    "http://intranet.test/",
    "http://mixed.test/",
    "http://v6-loopback.test/",
    "http://v6-mapped.test/",
    "http://link-local.test/",
    "http://metadata.test/",
]


@pytest.mark.parametrize("url", TRICKS)
def test_trick_is_refused_before_any_connection(site: type[FakeSite], url: str) -> None:
    fetcher, router, _ = make(site)
    before = site.hits
    with pytest.raises(UrlRefused, match=r"^Refused to open the URL: "):
        asyncio.run(fetcher.fetch(url.format(port=site.port)))
    assert router.requests == []
    assert site.hits == before


def test_enough_tricks() -> None:
    assert len(TRICKS) >= 30


def test_public_page_connects_to_the_vetted_ip_with_the_name_as_host(site: type[FakeSite]) -> None:
    fetcher, router, dns = make(site)
    page = asyncio.run(fetcher.fetch("http://public.test/page"))
    assert page.title == "Fake" and page.text == "Host: public.test"
    [request] = router.requests
    assert request.url.host == PUBLIC and request.headers["host"] == "public.test"
    assert dns.calls == ["public.test"]


def test_https_uses_the_name_for_sni(site: type[FakeSite]) -> None:
    fetcher, router, _ = make(site)
    asyncio.run(fetcher.fetch("https://public.test:8443/page"))
    [request] = router.requests
    assert str(request.url) == f"https://{PUBLIC}:8443/page"
    assert request.headers["host"] == "public.test:8443"
    assert request.extensions["sni_hostname"] == "public.test"


def test_dns_rebinding_cannot_move_the_connection(site: type[FakeSite]) -> None:
    fetcher, router, dns = make(site)
    asyncio.run(fetcher.fetch("http://rebind.test/page"))  # first answer public, a second would be 127.0.0.1
    assert dns.calls == ["rebind.test"]
    assert [r.url.host for r in router.requests] == [PUBLIC]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/to-loopback", "Refused to open the URL: its host 127.0.0.1 is a loopback address."),
        ("/to-metadata", "Refused to open the URL: its host 169.254.169.254 is the cloud metadata address."),
        ("/to-private-name", "Refused to open the URL: intranet.test resolves to 10.1.2.3, a private address."),
        ("/to-file", "Refused to open the URL: only http and https are allowed, not `file:`."),
    ],
)
def test_every_redirect_hop_is_checked(site: type[FakeSite], path: str, message: str) -> None:
    fetcher, router, _ = make(site)
    before = site.hits
    with pytest.raises(UrlRefused) as refused:
        asyncio.run(fetcher.fetch(f"http://public.test{path}"))
    assert str(refused.value) == message
    assert len(router.requests) == 1 and site.hits == before + 1  # only the first, public hop was made


def test_good_redirects_are_followed(site: type[FakeSite]) -> None:
    fetcher, router, _ = make(site)
    page = asyncio.run(fetcher.fetch("http://public.test/to-public"))
    assert page.url == "http://second.test/page" and page.text == "Host: second.test"
    assert [r.url.host for r in router.requests] == [PUBLIC, PUBLIC2]
    page = asyncio.run(fetcher.fetch("http://public.test/relative"))
    assert page.url == "http://public.test/page"


def test_redirect_loop_is_cut(site: type[FakeSite]) -> None:
    fetcher, router, _ = make(site, max_redirects=3)
    with pytest.raises(BackendError, match=r"^Too many redirects \(more than 3\) opening"):
        asyncio.run(fetcher.fetch("http://public.test/loop"))
    assert len(router.requests) == 4


def test_content_type_size_time_and_status(site: type[FakeSite]) -> None:
    fetcher, _, _ = make(site, max_bytes=1000, timeout=0.5)
    with pytest.raises(BackendError, match=r"^Cannot open `http://public.test/image`: content type `image/png`"):
        asyncio.run(fetcher.fetch("http://public.test/image"))
    assert asyncio.run(fetcher.fetch("http://public.test/big")).text == "x" * 1000
    with pytest.raises(BackendError, match=r"^Error fetching `http://public.test/missing`: HTTP 404\.$"):
        asyncio.run(fetcher.fetch("http://public.test/missing"))
    start = time.monotonic()
    with pytest.raises(BackendError, match=r"^Timed out after 0.5 seconds fetching `http://public.test/slow`\.$"):
        asyncio.run(fetcher.fetch("http://public.test/slow"))
    assert time.monotonic() - start < 2
    assert asyncio.run(fetcher.fetch("http://public.test/text")).text == "plain words"
    markdown = asyncio.run(fetcher.fetch("http://public.test/md"))
    assert markdown.text == "# Title\n\n【0†link】" and markdown.links == {0: "http://public.test/page"}
    source = asyncio.run(fetcher.fetch("http://public.test/page", view_source=True))
    assert source.url == "view-source:http://public.test/page" and source.text.startswith("<title>Fake</title>")


def test_unresolvable_host(site: type[FakeSite]) -> None:
    fetcher, router, _ = make(site)
    with pytest.raises(BackendError, match=r"^Could not resolve nowhere.test: no such host nowhere.test$"):
        asyncio.run(fetcher.fetch("http://nowhere.test/"))
    assert router.requests == []


def test_browser_reports_refusals_as_tool_text(site: type[FakeSite]) -> None:
    fetcher, router, _ = make(site)
    browser = BrowserTool(fetcher)

    def reply(function: str, args: str) -> str:
        call = Message.from_author_and_content(Author.new(Role.ASSISTANT), args).with_recipient(f"browser.{function}")
        [message] = asyncio.run(browser.process(call))
        return message.content[0].text  # type: ignore[union-attr]

    assert reply("open", '{"id": "http://169.254.169.254/"}') == (
        "Refused to open the URL: its host 169.254.169.254 is the cloud metadata address."
    )
    assert reply("search", '{"query": "x"}') == "Search is not available: no search backend is configured."
    assert reply("open", '{"id": "http://public.test/page"}') == (
        "[0] Fake (http://public.test/page)\n**viewing lines [0 - 0] of 0**\n\nL0: Host: public.test"
    )
    assert router.requests and browser.citation_target(0) == ("http://public.test/page", "Fake")


def test_sync_tools_close_leaves_nothing_pending(site: type[FakeSite], caplog: pytest.LogCaptureFixture) -> None:
    """A page cut at max_bytes leaves httpx's byte stream (an async generator) open; closing the tools' private
    loop must finalise it and every task instead of destroying them pending."""
    fetcher, _, _ = make(site, max_bytes=1000)
    tools = BuiltinTools(browser=BrowserTool(fetcher))
    message = (
        Message.from_author_and_content(Author.new(Role.ASSISTANT), json.dumps({"id": "http://public.test/big"}))
        .with_recipient("browser.open")
        .with_channel("commentary")
    )
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        assert "x" * 80 in tools.run_sync(message).output
        tools.close()
        del tools, fetcher
        gc.collect()
    assert "Task was destroyed but it is pending" not in caplog.text
    assert not caplog.records, caplog.text
