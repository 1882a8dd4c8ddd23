"""Keeping `gptoss chat` inside the context: when the next prompt plus the per-turn answer budget no longer fits,
the oldest whole turns (a user message and everything up to the next one) are dropped, so the chat never dead-ends
on "context overflow"; only a single message too long for the context is an error."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gptoss.server.conversation import Item, Text


class TooLong(ValueError):
    """The current message alone does not leave room for an answer."""


@dataclass(frozen=True)
class Fitted:
    items: list[Item]  # the conversation that fits
    dropped: int  # oldest turns removed
    budget: int  # output tokens this answer may use
    prompt_tokens: int


def turn_starts(items: Sequence[Item]) -> list[int]:
    return [i for i, item in enumerate(items) if isinstance(item, Text) and item.role == "user"]


def fit(items: list[Item], measure: Callable[[list[Item]], int], context: int, want: int) -> Fitted:
    """Drops the oldest turns until `measure(items)` (prompt tokens) + `want` fits in `context`; with only the
    current turn left, the answer gets whatever room remains."""
    dropped = 0
    while True:
        used = measure(items)
        starts = turn_starts(items)
        if used + want <= context or len(starts) <= 1:
            break
        items = items[starts[1] :]
        dropped += 1
    room = context - used
    if room < 1:
        raise TooLong(
            f"this message takes {used} tokens with the instructions, and the context holds {context}: shorten it"
        )
    return Fitted(items, dropped, min(want, room), used)
