"""Server-sent events: framing, keep-alive comments while a stream is idle, and cancelling on disconnect.

Disconnects are watched directly (an `http.disconnect` on the ASGI receive channel) instead of waiting for a write
to fail, so a client that goes away during a long prefill frees the engine at once, not at the next token. Whatever
else ends a stream, its generation is cancelled as the request ends (server.inflight); a stream that fails on the
server's side ends with an `error` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gptoss.server.errors import ApiError

KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
log = logging.getLogger("gptoss.server")


def encode_json(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def frame(data: dict[str, Any], event: str | None = None) -> bytes:
    """One SSE message; `event:` is set for the Responses API, whose events are named by their type."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {encode_json(data)}\n\n".encode()


# the last event of a stream that broke: `error` with an OpenAI error object, which the openai SDK raises as APIError
FAILED = frame(
    {"type": "error", **ApiError(500, "The server failed while streaming; the response was stopped.").body()}, "error"
)


async def with_keepalive(chunks: AsyncGenerator[bytes, None], interval: float) -> AsyncIterator[bytes]:
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
        with contextlib.suppress(BaseException):
            await pending
        await chunks.aclose()  # runs the producer's cleanup (which cancels its generation)


async def wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def watch(receive: Receive, callback: Callable[[], None]) -> asyncio.Task[None]:
    watcher = asyncio.create_task(wait_for_disconnect(receive))
    watcher.add_done_callback(lambda task: None if task.cancelled() else callback())
    return watcher


@contextlib.asynccontextmanager
async def on_disconnect(request: Request, callback: Callable[[], None]) -> AsyncIterator[None]:
    """Calls `callback` as soon as the client disconnects, for as long as the block runs."""
    watcher = watch(request.receive, callback)
    try:
        yield
    finally:
        watcher.cancel()


class EventStream(StreamingResponse):
    """A streaming response that watches for the client leaving from its first byte to its last, calls
    `on_disconnect` at once when it does (or when a write fails), and always closes its producer."""

    def __init__(self, chunks: AsyncGenerator[bytes, None], keepalive: float, on_disconnect: Callable[[], None]):
        super().__init__(with_keepalive(chunks, keepalive), media_type="text/event-stream", headers=HEADERS)
        self.on_disconnect = on_disconnect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = watch(receive, self.on_disconnect)
        try:
            await self.stream_response(send)
        except OSError:  # the client went away mid-write: nothing left to tell it
            self.on_disconnect()
        except Exception:  # a bug: logged once, and the client told; the generation is cancelled as the request ends
            log.exception("the event stream of %s %s failed", scope.get("method"), scope.get("path"))
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": FAILED, "more_body": False})
        finally:
            watcher.cancel()
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


def sse_response(
    chunks: AsyncGenerator[bytes, None], keepalive: float, on_disconnect: Callable[[], None]
) -> EventStream:
    return EventStream(chunks, keepalive, on_disconnect)
