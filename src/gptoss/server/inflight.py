"""One rule for every request: when its HTTP exchange ends, every generation it submitted is cancelled.

It ends normally, by any exception (a frame that cannot be encoded, a bug, the task cancelled at the end of a
shutdown), or with the client gone; in each case the generations it started are cancelled as the ASGI call returns,
which frees their engine slots at once (cancelling a finished generation does nothing). `generation.submit` records
each generation on the request that is running, so the APIs and the built-in tool loop (which submits once per
round) need no cleanup of their own for this. At the end of a shutdown drain, `cancel_all` cancels what is still
running, and anything submitted after that is cancelled at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

from gptoss.engine import Generation

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class InFlight:
    """The generations of the requests being served, grouped by request."""

    def __init__(self) -> None:
        self.requests: set[Owned] = set()
        self.closed = False  # the drain is over: new generations are cancelled as they are submitted

    def cancel_all(self) -> int:
        """Cancels every running generation from now on; the number of requests that had one running."""
        self.closed = True
        busy = [owned for owned in self.requests if any(g.finish is None for g in owned.generations)]
        for owned in list(self.requests):
            owned.cancel()
        return len(busy)


class Owned:
    """The generations one request submitted."""

    def __init__(self, inflight: InFlight) -> None:
        self.inflight = inflight
        self.generations: list[Generation] = []

    def add(self, generation: Generation) -> None:
        self.generations.append(generation)
        if self.inflight.closed:
            generation.cancel()

    def cancel(self) -> None:
        for generation in self.generations:
            generation.cancel()


_current: ContextVar[Owned | None] = ContextVar("gptoss_request_generations", default=None)


def track(generation: Generation) -> Generation:
    """Ties a just-submitted generation to the request being served (outside a request it is left alone)."""
    owned = _current.get()
    if owned is not None:
        owned.add(generation)
    return generation


class CancelOnExit:
    """ASGI middleware applying the rule to every HTTP request."""

    def __init__(self, app: ASGIApp, inflight: InFlight) -> None:
        self.app = app
        self.inflight = inflight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        owned = Owned(self.inflight)
        self.inflight.requests.add(owned)
        token = _current.set(owned)
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)
            self.inflight.requests.discard(owned)
            owned.cancel()
