"""Server-sent events: framing, keep-alive comments while a stream is idle, and cancelling on disconnect.

Disconnects are watched directly (an `http.disconnect` on the ASGI receive channel) instead of waiting for a write
to fail, so a client that goes away during a long prefill frees the engine at once, not at the next token.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def encode_json(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def frame(data: dict[str, Any], event: str | None = None) -> bytes:
    """One SSE message; `event:` is set for the Responses API, whose events are named by their type."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {encode_json(data)}\n\n".encode()


async def with_keepalive(chunks: AsyncIterator[bytes], interval: float) -> AsyncIterator[bytes]:
    """Passes chunks through, inserting a comment line whenever `interval` seconds pass without one."""
    pending: asyncio.Future[bytes] = asyncio.ensure_future(anext(chunks))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield KEEPALIVE
                continue
            try:
                chunk = pending.result()
            except StopAsyncIteration:
                return
            yield chunk
            pending = asyncio.ensure_future(anext(chunks))
    finally:
        pending.cancel()


async def wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


@asynccontextmanager
async def on_disconnect(request: Request, callback: Callable[[], None]) -> AsyncIterator[None]:
    """Calls `callback` as soon as the client disconnects, for as long as the block runs."""
    watcher = asyncio.create_task(wait_for_disconnect(request))
    watcher.add_done_callback(lambda task: None if task.cancelled() else callback())
    try:
        yield
    finally:
        watcher.cancel()


def sse_response(chunks: AsyncIterator[bytes], keepalive: float) -> StreamingResponse:
    return StreamingResponse(with_keepalive(chunks, keepalive), media_type="text/event-stream", headers=HEADERS)
