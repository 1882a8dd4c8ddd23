"""Web search providers that need an API key: Exa and You.com (the reference browser's two backends).

Endpoints, payloads and headers follow the reference (openai/gpt-oss `simple_browser`):
- Exa: `POST {base}/search {"query", "numResults", "contents": {"text": true, "summary": true}}` and
  `POST {base}/contents {"urls": [url], "text": {"includeHtmlTags": true}}`, header `x-api-key` (EXA_API_KEY);
- You.com: `GET {base}/v1/search?query=&count=` and `POST {base}/v1/contents {"urls": [url],
  "livecrawl_formats": "html"}`, header `x-api-key` (YDC_API_KEY).
Both send `user-agent: gpt-oss/{version}`. The base URL is configurable (tests point it at a fake on loopback).
These services fetch pages on their side, so opening a result goes through them, not through our connection.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from gptoss.tools.browser.backend import Backend, BackendError, SearchResult
from gptoss.tools.browser.page import Page, html_to_page, source_page

USER_AGENT = "gpt-oss/0.1.0"


class _Provider(Backend):
    env_key = ""
    default_base_url = ""
    label = ""

    def __init__(self, api_key: str | None = None, *, base_url: str | None = None, timeout: float = 30.0) -> None:
        self.api_key = api_key
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout), trust_env=False)

    def handles(self, url: str) -> bool:
        return url.lower().startswith(("http://", "https://"))

    def _headers(self) -> dict[str, str]:
        key = self.api_key or os.environ.get(self.env_key)
        if not key:
            raise BackendError(f"{self.label} API key not provided (set {self.env_key}).")
        return {"x-api-key": key, "user-agent": USER_AGENT}

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._client.request(method, self.base_url + path, headers=self._headers(), **kwargs)
        except httpx.HTTPError as e:
            raise BackendError(f"{self.label} request failed: {type(e).__name__}: {e}") from None
        if response.status_code != 200:
            raise BackendError(f"{self.label} API error {response.status_code}: {response.text[:500]}")
        try:
            return response.json()
        except ValueError:
            raise BackendError(f"{self.label} API returned something that is not JSON.") from None

    async def aclose(self) -> None:
        await self._client.aclose()


def _field(item: Any, key: str) -> str:
    value = item.get(key) if isinstance(item, dict) else None
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value) if value is not None else ""


class ExaBackend(_Provider):
    env_key, default_base_url, label = "EXA_API_KEY", "https://api.exa.ai", "Exa"

    async def search(self, query: str, topn: int) -> list[SearchResult]:
        payload = {"query": query, "numResults": topn, "contents": {"text": True, "summary": True}}
        data = await self._call("POST", "/search", json=payload)
        items = data.get("results") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise BackendError("Exa API returned no `results` list.")
        return [
            SearchResult(_field(r, "title"), _field(r, "url"), _field(r, "summary")) for r in items if _field(r, "url")
        ][:topn]

    async def fetch(self, url: str, *, view_source: bool = False) -> Page:
        data = await self._call("POST", "/contents", json={"urls": [url], "text": {"includeHtmlTags": True}})
        items = data.get("results") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:
            raise BackendError(f"No contents returned for {url}")
        html, title = _field(items[0], "text"), _field(items[0], "title") or None
        return source_page(html, url, title) if view_source else html_to_page(html, url, title)


class YouComBackend(_Provider):
    env_key, default_base_url, label = "YDC_API_KEY", "https://api.ydc-index.io", "You.com"

    async def search(self, query: str, topn: int) -> list[SearchResult]:
        data = await self._call("GET", "/v1/search", params={"query": query, "count": topn})
        groups = data.get("results") if isinstance(data, dict) else None
        if not isinstance(groups, dict):
            raise BackendError("You.com API returned no `results` object.")
        found: list[SearchResult] = []
        for group, snippet_key in (("web", "snippets"), ("news", "description")):
            for r in groups.get(group) or []:
                if _field(r, "url"):
                    snippet = _field(r, snippet_key) or _field(r, "description")
                    found.append(SearchResult(_field(r, "title"), _field(r, "url"), snippet))
        return found[:topn]

    async def fetch(self, url: str, *, view_source: bool = False) -> Page:
        data = await self._call("POST", "/v1/contents", json={"urls": [url], "livecrawl_formats": "html"})
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            raise BackendError(f"No contents returned for {url}")
        if "html" not in data[0]:
            raise BackendError(f"No HTML returned for {url}")
        html, title = _field(data[0], "html"), _field(data[0], "title") or None
        return source_page(html, url, title) if view_source else html_to_page(html, url, title)
