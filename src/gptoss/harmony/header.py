"""Parse the text of a message header (everything between `<|start|>` and `<|message|>`).

`parse_header` is openai-harmony's algorithm, exact to the error text: the first `<|channel|>` value ends at Unicode
whitespace or `<`; the rest is trimmed (Unicode White_Space, not Python's isspace), split on ASCII whitespace only,
and read right to left as content type, then recipient. `salvage_header` is the lenient fallback used when that
fails: it keeps what it can recognise and reports the words it could not place.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from gptoss.harmony.errors import HarmonyError
from gptoss.harmony.messages import KNOWN_CHANNELS, Author, Role

CHANNEL_MARKER = "<|channel|>"
CONSTRAIN_MARKER = "<|constrain|>"
ROLE_NAMES = {r.value: r for r in Role}

# Rust's char::is_whitespace (Unicode White_Space). Python's isspace also counts U+001C..U+001F, Rust does not.
WHITE_SPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
ASCII_WHITESPACE = re.compile(r"[ \t\n\x0c\r]+")
DEBUG_ESCAPES = {"\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", '"': '\\"', "\0": "\\0"}


@dataclass
class Header:
    author: Author
    recipient: str | None = None
    channel: str | None = None
    content_type: str | None = None

    def to_dict(self) -> dict[str, object]:
        """The shape openai-harmony's `state_data` shows for the header being read."""
        author: dict[str, object] = {"role": self.author.role.value}
        if self.author.name is not None:
            author["name"] = self.author.name
        return {
            "author": author,
            "recipient": self.recipient,
            "channel": self.channel,
            "content_type": self.content_type,
        }


def rust_trim(text: str) -> str:
    start, end = 0, len(text)
    while start < end and text[start] in WHITE_SPACE:
        start += 1
    while end > start and text[end - 1] in WHITE_SPACE:
        end -= 1
    return text[start:end]


def split_ascii(text: str) -> list[str]:
    return [part for part in ASCII_WHITESPACE.split(text) if part]


def rust_debug(text: str) -> str:
    """A string as Rust's `{:?}` prints it; non-printable and combining characters become `\\u{hex}`."""
    out = []
    for ch in text:
        if ch in DEBUG_ESCAPES:
            out.append(DEBUG_ESCAPES[ch])
        elif not ch.isprintable() or unicodedata.category(ch) in ("Mn", "Me"):
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def take_channel(text: str) -> tuple[str | None, str]:
    """Cut the first `<|channel|>value` out of the header text: (channel, remaining text)."""
    i = text.find(CHANNEL_MARKER)
    if i < 0:
        return None, text
    after = text[i + len(CHANNEL_MARKER) :]
    end = next((j for j, ch in enumerate(after) if ch in WHITE_SPACE or ch == "<"), len(after))
    if end == 0:
        raise HarmonyError("channel marker present but no channel value found in header")
    return after[:end], text[:i] + after[end:]


def header_parts(text: str) -> list[str]:
    text = rust_trim(text)
    if CONSTRAIN_MARKER in text:  # `to=x<|constrain|>json` written without a space still splits
        text = rust_trim(text.replace(CONSTRAIN_MARKER, " " + CONSTRAIN_MARKER))
    return split_ascii(text)


def take_role(parts: list[str], role: Role | None) -> tuple[Role, str | None]:
    """The author's role (from the parser's priming, else the first word) and the word it was read from."""
    if role is not None:
        return role, None
    if not parts:
        raise HarmonyError("message header did not contain a role")
    word = parts[0]
    if word in ROLE_NAMES:
        return ROLE_NAMES[word], word
    if len(parts) > 1 or word.startswith("to="):  # `functions.x to=assistant`: a tool result names its tool
        parts.pop(0)
        return Role.TOOL, word
    raise HarmonyError(f"Unknown role: {word}")


def take_recipient_and_type(parts: list[str]) -> tuple[str | None, str | None]:
    """Read right to left: `to=x` is the recipient; a lone bare word is too; else the last word is the type."""
    if not parts:
        return None, None
    count, last = len(parts), parts.pop()
    if last.startswith("to="):
        return last[3:], None
    if count == 1:
        return last, None
    word = parts.pop()
    return (word[3:] if word.startswith("to=") else word), last


def parse_header(text: str, role: Role | None) -> Header:
    """openai-harmony's header parser; raises HarmonyError with its messages."""
    channel, text = take_channel(text)
    parts = header_parts(text)
    role, role_word = take_role(parts, role)
    if parts and parts[0] == role.value:
        parts.pop(0)
    recipient, content_type = take_recipient_and_type(parts)
    if parts:
        raise HarmonyError(f"unexpected tokens remaining in message header: Some({rust_debug(' '.join(parts))})")
    author = Author(role, role_word if role is Role.TOOL else None)
    return Header(author, recipient, channel, content_type)


@dataclass
class Salvage:
    """A header read leniently: what was recognised, what was guessed, and the words left over."""

    header: Header
    notes: list[str]
    leftover: str


def salvage_role(parts: list[str], role: Role | None, default_role: Role, notes: list[str]) -> Author:
    if role is not None:
        return Author(role)
    if parts and parts[0] in ROLE_NAMES:
        return Author(ROLE_NAMES[parts.pop(0)])
    if parts and parts[0].partition(":")[0] in ROLE_NAMES:  # `assistant:bob`, as the renderer writes names
        role_word, _, name = parts.pop(0).partition(":")
        return Author(ROLE_NAMES[role_word], name or None)
    notes.append(f"no role in header; assumed {default_role.value}")
    return Author(default_role)


def salvage_channel(text: str, notes: list[str]) -> tuple[str | None, str]:
    """The first `<|channel|>` that has a value; markers without one are dropped."""
    while True:
        try:
            return take_channel(text)
        except HarmonyError:
            notes.append("empty <|channel|> marker removed")
            text = text.replace(CHANNEL_MARKER, " ", 1)


def take_prefixed(parts: list[str], prefix: str) -> str | None:
    for i, part in enumerate(parts):
        if part.startswith(prefix) and len(part) > len(prefix):
            return parts.pop(i)
    return None


def salvage_header(text: str, role: Role | None, default_role: Role) -> Salvage:
    """Lenient header reading: never raises; words it cannot place are returned in `leftover`."""
    notes: list[str] = []
    channel, text = salvage_channel(text, notes)
    parts = header_parts(text)
    author = salvage_role(parts, role, default_role, notes)
    if parts and parts[0] == author.role.value:
        parts.pop(0)
    if channel is None and parts and parts[0] in KNOWN_CHANNELS:  # `commentary to=...` with no channel marker
        channel = parts.pop(0)
        notes.append(f"channel {channel!r} written without <|channel|>")
    recipient = take_prefixed(parts, "to=")
    content_type = take_prefixed(parts, CONSTRAIN_MARKER)
    header = Header(author, None if recipient is None else recipient[3:], channel, content_type)
    if parts:
        notes.append(f"unparsed header words dropped: {' '.join(parts)!r}")
    return Salvage(header, notes, " ".join(parts))
