"""The web chat at / in a real browser: Debian's chromium driven by Playwright (its own browser download is not
reachable). Streams through /v1/responses from a scripted model: reasoning dimmed and collapsible, a browser tool
call as it happens, the answer, a follow-up via previous_response_id, the stop button, the API-key field. A
screenshot is saved under test-artifacts/ (or $GPTOSS_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gptoss.server.config import ServerConfig
from gptoss.server.webchat import page
from gptoss.tools import BrowserTool, LocalIndex
from tests.engine.scripted import ScriptedSource
from tests.server.conftest import ANSWER, MODEL, Running, serve, tokens

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("GPTOSS_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
SEARCH = (
    "<|channel|>analysis<|message|>Let me search.<|end|>"
    '<|start|>assistant to=browser.search<|channel|>analysis<|message|>{"query":"kiwi bird"}<|call|>'
)
OPEN = '<|channel|>analysis to=browser.open<|message|>{"id":0}<|call|>'
CITED = "<|channel|>final<|message|>Kiwis lay very large eggs【1†L3-L3】.<|return|>"
LONG = "<|channel|>final<|message|>" + "and on " * 400 + "<|return|>"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the web chat test needs Debian's chromium at {CHROMIUM}: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    docs = tmp_path_factory.mktemp("docs")
    (docs / "kiwi.md").write_text("# Kiwi\n\nThe kiwi is a flightless bird from New Zealand.\n")
    index = LocalIndex(docs, base_url="https://docs.example/")
    store = tmp_path_factory.mktemp("store") / "r.sqlite3"
    running = serve(store, ScriptedSource(default=tokens(ANSWER), delay=0.01), browser=lambda: BrowserTool(index))
    yield running
    running.stop()


def test_a_conversation_with_reasoning_a_tool_call_and_a_follow_up(browser: Any, web: Running) -> None:
    web.source.queue(tokens(SEARCH), tokens(ANSWER))
    page_ = browser.new_page(viewport={"width": 1000, "height": 800})
    page_.goto(web.url + "/")
    page_.wait_for_function(f"document.getElementById('model').textContent === {MODEL!r}")
    page_.select_option("#effort", "high")
    page_.fill("#input", "Tell me about kiwis.")
    page_.press("#input", "Enter")
    page_.wait_for_selector(".answer:has-text('Hello there!')")
    page_.wait_for_selector("body:not(.busy)")
    tool = page_.locator(".tool.web_search_call .body")
    assert tool.inner_text() == "search: kiwi bird"
    reasoning = page_.locator("details.reasoning").first
    assert reasoning.locator(".text").text_content() == "Let me search."
    assert reasoning.get_attribute("open") is None  # collapsed once written
    assert page_.locator("details.reasoning").nth(1).locator(".text").text_content() == "Let me think."
    assert "Reasoning: high" in web.last_prompt()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page_.locator("details.reasoning").nth(1).locator("summary").click()  # shows the reasoning again
    page_.screenshot(path=str(ARTIFACTS / "webchat.png"), full_page=True)
    assert (ARTIFACTS / "webchat.png").stat().st_size > 10_000

    page_.fill("#input", "And emus?")
    page_.click("#send")
    page_.wait_for_selector(".turn:nth-child(2) .answer:has-text('Hello there!')")
    prompt = web.last_prompt()
    assert "Tell me about kiwis." in prompt and prompt.endswith("And emus?<|end|><|start|>assistant")
    page_.close()


def test_opened_pages_and_citations_become_links(browser: Any, web: Running) -> None:
    web.source.queue(tokens(SEARCH), tokens(OPEN), tokens(CITED))
    page_ = browser.new_page()
    page_.goto(web.url + "/")
    page_.fill("#input", "Do kiwis lay eggs?")
    page_.press("#input", "Enter")
    link = page_.wait_for_selector(".answer a[href='https://docs.example/kiwi.md']")
    assert link.inner_text() == "docs.example" and link.get_attribute("rel") == "noopener noreferrer"
    bodies = page_.locator(".tool.web_search_call .body").all_inner_texts()
    assert bodies == ["search: kiwi bird", "open: https://docs.example/kiwi.md"]
    page_.close()


def test_stop_cancels_the_request_and_keeps_the_chat(browser: Any, web: Running) -> None:
    web.source.queue(tokens(LONG))
    page_ = browser.new_page()
    page_.goto(web.url + "/")
    page_.fill("#input", "Talk for a long time.")
    page_.press("#input", "Enter")
    page_.wait_for_selector(".answer:has-text('and on and on')")
    page_.click("#stop")
    page_.wait_for_selector(".status:has-text('(stopped)')")
    page_.wait_for_selector("body:not(.busy)")
    # The abort reaches the engine a moment after the page shows it (a step may be in flight): wait until the
    # step count holds still for 300 ms, then it must stay put, well short of the 400-token answer.
    steps = -1
    for _ in range(20):
        if web.source.steps == steps:
            break
        steps = web.source.steps
        page_.wait_for_timeout(300)
    page_.wait_for_timeout(300)
    assert web.source.steps == steps < 400  # the server stopped generating when the request was aborted
    page_.fill("#input", "hello again")
    page_.press("#input", "Enter")
    page_.wait_for_selector(".turn:nth-child(2) .answer:has-text('Hello there!')")
    page_.close()


def test_the_api_key_field(browser: Any, tmp_path: Path) -> None:
    running = serve(tmp_path / "r.sqlite3", api_key="sekrit")
    try:
        page_ = browser.new_page()
        page_.goto(running.url + "/")
        page_.wait_for_selector("#keybox", state="visible")
        page_.fill("#key", "sekrit")
        page_.dispatch_event("#key", "change")
        page_.wait_for_function(f"document.getElementById('model').textContent === {MODEL!r}")
        page_.fill("#input", "hi")
        page_.press("#input", "Enter")
        page_.wait_for_selector(".answer:has-text('Hello there!')")
        page_.close()
    finally:
        running.stop()


def test_the_page_offers_the_servers_builtin_tools(tmp_path: Path) -> None:
    plain = ServerConfig(store_path=tmp_path / "s")
    assert '<script id="config" type="application/json">{"tools": []}</script>' in page(plain)
    with_browser = ServerConfig(store_path=tmp_path / "s", browser=lambda: BrowserTool([]))
    assert '{"tools": [{"type": "web_search"}]}' in page(with_browser)
