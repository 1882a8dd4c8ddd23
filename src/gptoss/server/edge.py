"""The HTTP edge: the limits uvicorn and h11 leave open, and a shutdown that drains, then exits normally.

h11 has no timeout on an incomplete request (a client sending a header line or a body byte a second holds its
connection forever) and bounds the request head only while it is incomplete (35 KB of headers in one read pass; in
1 KiB reads they do not). The protocol below adds a deadline for the request head and one for the body, one size
bound on the whole head however its bytes are split, and closes the connection on conflicting framing
(Transfer-Encoding with Content-Length: RFC 9112 §6.1, a request-smuggling vector). Each of these is answered with
an OpenAI-shaped error and `Connection: close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import math
import socket
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from gptoss.server.errors import ApiError

log = logging.getLogger("gptoss.server")
CONFLICTING_FRAMING = "A request may not have both Transfer-Encoding and Content-Length."
DRAIN_GRACE_S = 5.0  # after the drain: time for cancelled requests to send their last event before tasks are killed


@dataclass(frozen=True)
class HttpLimits:
    header_timeout_s: float = 10.0  # from a request's first byte (or the connection's opening) to the end of its head
    body_timeout_s: float = 60.0  # from the end of the head to the end of the body
    max_header_bytes: int = 16 << 10  # the request line and all header lines together

    def __post_init__(self) -> None:
        if min(self.header_timeout_s, self.body_timeout_s) <= 0 or self.max_header_bytes <= 0:
            raise ValueError("HTTP timeouts and the header size limit must be positive")


def head_size(event: h11.Request) -> int:
    """Bytes of the request line and header lines as sent (counting one space after each colon)."""
    line = len(event.method) + len(event.target) + len(event.http_version) + len(b"  HTTP/\r\n")
    return line + sum(len(name) + len(value) + 4 for name, value in event.headers.raw_items()) + 2


def check_head(event: h11.Request, max_bytes: int) -> None:
    if head_size(event) > max_bytes:
        raise h11.RemoteProtocolError("the request head is too large", 431)
    names = {name for name, _ in event.headers}
    if b"transfer-encoding" in names and b"content-length" in names:
        raise h11.RemoteProtocolError(CONFLICTING_FRAMING, 400)


class GuardedConnection(h11.Connection):
    """h11's server side, also refusing a too-large head that arrived complete, and conflicting framing."""

    def __init__(self, max_header_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self.max_header_bytes = max_header_bytes
        self.rejection: h11.RemoteProtocolError | None = None  # why the request was refused, for the answer

    def next_event(self) -> Any:
        try:
            event = super().next_event()
            if isinstance(event, h11.Request):
                check_head(event, self.max_header_bytes)
        except h11.RemoteProtocolError as e:
            self.rejection = e
            raise
        return event


def error_bytes(status: int, message: str, code: str) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection (written directly: h11 may be mid-request)."""
    body = json.dumps(ApiError(status, message, code=code).body()).encode()
    phrase = http.HTTPStatus(status).phrase
    head = f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return (head + "connection: close\r\n\r\n").encode() + body


REJECTION_CODES = {400: "bad_http_request", 408: "request_timeout", 431: "headers_too_large", 501: "not_implemented"}


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the head/body deadlines and the head checks. `on_reject(reason)` counts refusals
    (the app never sees these requests)."""

    limits: ClassVar[HttpLimits] = HttpLimits()
    on_reject: ClassVar[Callable[[str], None]] = staticmethod(lambda reason: None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guarded = GuardedConnection(self.limits.max_header_bytes)
        self.conn = self.guarded
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.arm_head_timer()  # a connection that sends nothing is a head that never completes

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self.arm_head_timer()
        super().data_received(data)
        self.sync_timers()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.sync_timers()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.head_timer, self.body_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.body_timer = None
        super().connection_lost(exc)

    def arm_head_timer(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.limits.header_timeout_s, self.head_timed_out)

    def sync_timers(self) -> None:
        """The head deadline runs while a head is awaited, the body deadline while a body is."""
        state = self.conn.their_state
        if state is not h11.IDLE and self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        if state is h11.SEND_BODY and self.body_timer is None:
            self.body_timer = self.loop.call_later(self.limits.body_timeout_s, self.body_timed_out)
        elif state is not h11.SEND_BODY and self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def mid_response(self) -> bool:
        return self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete

    def head_timed_out(self) -> None:
        self.head_timer = None
        message = f"The request head did not arrive within {self.limits.header_timeout_s:g} s."
        self.reject(408, message, "head_timeout", answer=not self.mid_response())

    def body_timed_out(self) -> None:
        self.body_timer = None  # the current cycle is the one whose body is late; it may have answered already
        message = f"The request body did not arrive within {self.limits.body_timeout_s:g} s."
        self.reject(408, message, "body_timeout", answer=not self.cycle.response_started)

    def send_400_response(self, msg: str) -> None:
        """Called by uvicorn on an HTTP protocol error: answer with the status the error calls for."""
        error = self.guarded.rejection
        status = error.error_status_hint if error is not None else 400
        message, reason = f"Malformed HTTP request: {error or msg}", "bad_request"
        if status == 431:  # from check_head, or from h11 while the head was still incomplete
            message = f"The request line and headers are larger than {self.limits.max_header_bytes} bytes."
            reason = "headers_too_large"
        elif error is not None and str(error) == CONFLICTING_FRAMING:
            message, reason = CONFLICTING_FRAMING, "conflicting_framing"
        self.reject(status, message, reason, answer=not self.mid_response())

    def reject(self, status: int, message: str, reason: str, answer: bool) -> None:
        """Answer (when no response is under way) and close; a request still running sees a disconnect."""
        if self.transport.is_closing():
            return
        log.info("closing the connection from %s: %s", self.client, message)
        type(self).on_reject(reason)
        if answer:
            self.transport.write(error_bytes(status, message, REJECTION_CODES.get(status, "bad_http_request")))
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # from now on the app's writes are dropped and its reads say "disconnect"
            cycle.message_event.set()
        self.transport.close()


def protocol_class(limits: HttpLimits, on_reject: Callable[[str], None] | None = None) -> type[GuardedH11Protocol]:
    attrs: dict[str, Any] = {"limits": limits}
    if on_reject is not None:
        attrs["on_reject"] = staticmethod(on_reject)
    return type("GuardedH11Protocol", (GuardedH11Protocol,), attrs)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, changed in two ways. On SIGTERM/SIGINT it drains (no new connections, in-flight requests go
    on) and `run` then returns normally: uvicorn re-raises the signal after its shutdown, which killed the process
    with status 143 before anything after `run` (closing the engine) ran. When the drain has lasted `drain_s`,
    `on_drain_timeout()` cancels what is still running (returning how many requests that was); their streams then end
    with a last event saying so, and `DRAIN_GRACE_S` later uvicorn cancels any task still left."""

    def __init__(self, config: uvicorn.Config, drain_s: float, on_drain_timeout: Callable[[], int]) -> None:
        config.timeout_graceful_shutdown = math.ceil(drain_s + DRAIN_GRACE_S)
        super().__init__(config)
        self.drain_s = drain_s
        self.on_drain_timeout = on_drain_timeout
        self.signals: list[int] = []  # the signals that stopped the server

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            self.signals += self._captured_signals
            self._captured_signals.clear()  # so uvicorn does not raise them again on the way out

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        timer = asyncio.get_running_loop().call_later(self.drain_s, self.drain_over)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()

    def drain_over(self) -> None:
        cancelled = self.on_drain_timeout()
        if cancelled:
            log.warning("the %g s drain is over: cancelled %d request(s) still running", self.drain_s, cancelled)


def uvicorn_config(app: Any, host: str, port: int, limits: HttpLimits, **options: Any) -> uvicorn.Config:
    """uvicorn's settings for gptoss: its h11 protocol with the limits above (never httptools, which lacks them)."""
    on_reject = options.pop("on_reject", None)
    http_class = protocol_class(limits, on_reject)
    return uvicorn.Config(
        app, host, port, http=http_class, h11_max_incomplete_event_size=limits.max_header_bytes, **options
    )
