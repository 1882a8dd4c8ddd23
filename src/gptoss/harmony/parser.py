"""Token-by-token parser for harmony output: `StreamableParser`, strict or lenient.

Strict mode is openai-harmony's StreamableParser: the same three states, the same per-token view (role, channel,
recipient, content type, last content delta, current content, state_data), the same U+FFFD handling of invalid
UTF-8 and the same error texts. One deliberate difference: a token id outside the vocabulary raises at once
(openai-harmony silently turns the rest of that message into one U+FFFD).

Lenient mode (`strict=False`) is ours, for serving a real model: it never raises and keeps every byte of every
ordinary token, either in a message or in a `Repair` record on `parser.repairs`. It treats a `<|start|>` or
`<|channel|>` inside content as the missing end of the open message, turns a header that never reached
`<|message|>` into a message whose text is the header's leftover, salvages headers openai-harmony rejects, skips
stray special tokens and unknown ids, and closes a truncated stream. On well-formed streams its messages equal
strict mode's, except that `<|channel|>final <|constrain|>json` gets content type `<|constrain|>json` instead of
openai-harmony's recipient `<|constrain|>json` (recorded as a repair).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from gptoss.harmony import tokenizer as tok
from gptoss.harmony.errors import HarmonyError
from gptoss.harmony.header import CHANNEL_MARKER, ROLE_NAMES, WHITE_SPACE, Header, parse_header, salvage_header
from gptoss.harmony.messages import Message, Role, TextContent, parse_role

if TYPE_CHECKING:
    from gptoss.harmony.encoding import HarmonyEncoding

CONSTRAIN_MARKER = "<|constrain|>"


class StreamState(StrEnum):
    EXPECT_START = "ExpectStart"
    HEADER = "Header"
    CONTENT = "Content"


class RepairKind(StrEnum):
    UNKNOWN_TOKEN = "unknown_token"  # id outside the vocabulary: skipped
    STRAY_STOP = "stray_stop"  # a stop token between messages: skipped
    STRAY_SPECIAL = "stray_special"  # a special token with no meaning where it stood: skipped
    MISSING_START = "missing_start"  # a message began without <|start|>
    RESTARTED_HEADER = "restarted_header"  # <|start|> where a header had just begun: started over
    MISSING_MESSAGE = "missing_message"  # a header ended without <|message|>: its leftover text became content
    MISSING_END = "missing_end"  # a new message began inside content: the open message was closed
    BAD_HEADER = "bad_header"  # a header strict parsing rejects: fields salvaged, leftover words in `dropped`
    CONSTRAIN_RECIPIENT = "constrain_recipient"  # `<|constrain|>x` read as recipient: moved to content type
    INVALID_UTF8 = "invalid_utf8"  # bytes that are not UTF-8, shown as U+FFFD; the raw bytes are in `dropped`


@dataclass(frozen=True)
class Repair:
    """One fix the lenient parser made. `dropped` holds any bytes that ended up in no message."""

    kind: RepairKind
    token_index: int  # index into parser.tokens of the last token fed when it was made (-1: none yet)
    detail: str
    dropped: bytes = b""


def utf8_error_text(e: UnicodeDecodeError) -> str:
    """Rust's `Utf8Error` display text, which openai-harmony's messages embed."""
    if e.reason == "unexpected end of data":
        return f"incomplete utf-8 byte sequence from index {e.start}"
    return f"invalid utf-8 sequence of {e.end - e.start} bytes from index {e.start}"


def split_headerless(text: str, primed: bool) -> tuple[str, str]:
    """A header that never reached <|message|>: (the header part, the text the model meant as content)."""
    i = text.find(CHANNEL_MARKER)
    if i >= 0:
        after = text[i + len(CHANNEL_MARKER) :]
        end = next((j for j, ch in enumerate(after) if ch in WHITE_SPACE or ch == "<"), len(after))
        rest = after[end:]
        return text[: i + len(CHANNEL_MARKER) + end], rest[1:] if rest.startswith(" ") else rest
    if primed:
        return "", text
    word, _, rest = text.partition(" ")
    return (word, rest) if word.partition(":")[0] in ROLE_NAMES else ("", text)


class StreamableParser:
    """Feed tokens with `process(token)`; read the state after each; call `process_eos()` at the end.

    `role` is the role the prompt primed (`<|start|>assistant` at the end of the prompt) or None when the stream
    itself starts with `<|start|>`. Single use: make a new parser for each response.
    """

    def __init__(self, encoding: HarmonyEncoding, role: Role | str | None, *, strict: bool = True) -> None:
        self._tk = encoding.tokenizer
        self.strict = strict
        primed = None if role is None else parse_role(role)
        self._default_role = primed or Role.ASSISTANT
        self._next_role = primed
        self._state = StreamState.EXPECT_START if primed is None else StreamState.HEADER
        self._implicit = False  # the open header began without <|start|>
        self._header_tokens: list[int] = []
        self._header: Header | None = None
        self._content = ""
        self._content_tokens: list[int] = []  # openai-harmony re-encodes each delta; state_data shows these
        self._pending = b""
        self._last_delta: str | None = None
        self._tokens: list[int] = []
        self._messages: list[Message] = []
        self.repairs: list[Repair] = []

    # ---- the view openai-harmony exposes ----

    @property
    def state(self) -> StreamState:
        return self._state

    @property
    def tokens(self) -> list[int]:
        return list(self._tokens)

    @property
    def messages(self) -> list[Message]:
        return list(self._messages)

    @property
    def last_content_delta(self) -> str | None:
        return self._last_delta

    @property
    def current_content(self) -> str:
        return self._content if self._state is StreamState.CONTENT else ""

    @property
    def current_role(self) -> Role | None:
        return self._header.author.role if self._header is not None else self._next_role

    @property
    def current_channel(self) -> str | None:
        return self._header.channel if self._header is not None else None

    @property
    def current_recipient(self) -> str | None:
        return self._header.recipient if self._header is not None else None

    @property
    def current_content_type(self) -> str | None:
        return self._header.content_type if self._header is not None else None

    @property
    def state_data(self) -> dict[str, Any]:
        if self._state is StreamState.HEADER:
            return {"state": "Header", "header_tokens": list(self._header_tokens)}
        if self._state is StreamState.CONTENT and self._header is not None:
            tokens = list(self._content_tokens)
            return {"state": "Content", "header": self._header.to_dict(), "content_tokens": tokens}
        return {"state": "ExpectStart"}

    # ---- feeding ----

    def process(self, token: int) -> StreamableParser:
        self._tokens.append(token)
        self._last_delta = None
        if self.strict:
            self._strict_step(token)
        elif not tok.in_vocab(token):
            self._repair(RepairKind.UNKNOWN_TOKEN, f"token id {token} is outside the vocabulary; skipped")
        elif self._state is StreamState.EXPECT_START:
            self._lenient_expect_start(token)
        elif self._state is StreamState.HEADER:
            self._lenient_header(token)
        else:
            self._lenient_content(token)
        return self

    def process_eos(self) -> StreamableParser:
        if self._state is StreamState.HEADER:
            if self.strict:
                raise HarmonyError("Unexpected EOS while waiting for message header to complete")
            self._end_header_without_message("the stream ended inside a header")
        elif self._state is StreamState.CONTENT:
            self._finish()
        return self

    # ---- shared mechanics ----

    def _begin_header(self, tokens: list[int], implicit: bool = False) -> None:
        self._state = StreamState.HEADER
        self._header_tokens = tokens
        self._implicit = implicit

    def _begin_content(self, header: Header) -> None:
        self._state = StreamState.CONTENT
        self._header = header
        self._next_role = None
        self._header_tokens = []
        self._content, self._pending, self._content_tokens = "", b"", []

    def _finish(self) -> None:
        assert self._header is not None
        tail = self._pending.decode("utf-8", errors="replace")
        if self._pending and not self.strict:
            self._repair(RepairKind.INVALID_UTF8, "message ended inside a UTF-8 character", self._pending)
        self._append_message(self._header, self._content + tail)
        self._header, self._content, self._pending, self._content_tokens = None, "", b"", []

    def _append_message(self, header: Header, text: str) -> None:
        message = Message(header.author, [TextContent(text)], header.channel, header.recipient, header.content_type)
        self._messages.append(message)
        self._state = StreamState.EXPECT_START
        self._last_delta = None

    def _push_content(self, token: int) -> None:
        pieces, self._pending = self._decode_prefix(self._pending + self._tk.decode_single_token_bytes(token))
        if not self.strict:  # lenient: decode what follows a bad sequence now, not one token later
            while self._pending and not self._pending_is_incomplete():
                more, self._pending = self._decode_prefix(self._pending)
                pieces += more
        for piece in pieces:  # openai-harmony encodes each decoded piece on its own for state_data
            self._content += piece
            self._content_tokens += self._tk.encode_ordinary(piece)
        self._last_delta = "".join(pieces) or None

    def _pending_is_incomplete(self) -> bool:
        try:
            self._pending.decode("utf-8")
        except UnicodeDecodeError as e:
            return e.start == 0 and e.reason == "unexpected end of data"
        return False

    def _decode_prefix(self, data: bytes) -> tuple[list[str], bytes]:
        """Decode what can be decoded: (text pieces, bytes still held). One invalid sequence becomes one U+FFFD."""
        try:
            return [data.decode("utf-8")], b""
        except UnicodeDecodeError as e:
            pieces = [data[: e.start].decode("utf-8")] if e.start else []
            if e.reason == "unexpected end of data":
                return pieces, data[e.start :]
            if not self.strict:
                self._repair(RepairKind.INVALID_UTF8, "bytes that are not UTF-8 became U+FFFD", data[e.start : e.end])
            return [*pieces, "\ufffd"], data[e.end :]

    def _repair(self, kind: RepairKind, detail: str, dropped: bytes = b"") -> None:
        self.repairs.append(Repair(kind, len(self._tokens) - 1, detail, dropped))

    # ---- strict: openai-harmony's state machine ----

    def _strict_step(self, token: int) -> None:
        tok.check_token(token)
        if self._state is StreamState.EXPECT_START:
            if token != tok.START:
                raise HarmonyError(f"Unexpected token {token} while expecting start token {tok.START}")
            self._begin_header([])
        elif self._state is StreamState.HEADER:
            if token == tok.MESSAGE:
                self._begin_content(parse_header(self._strict_header_text(), self._next_role))
            else:
                self._header_tokens.append(token)  # in strict mode even <|start|> and stop tokens are header text
        elif token in tok.STOP_TOKENS:
            self._finish()
        else:
            self._push_content(token)

    def _strict_header_text(self) -> str:
        try:
            return self._tk.decode_bytes(self._header_tokens).decode("utf-8")
        except UnicodeDecodeError:
            raise HarmonyError("could not decode header") from None

    # ---- lenient ----

    def _lenient_expect_start(self, token: int) -> None:
        if token == tok.START:
            self._begin_header([])
        elif token in tok.STOP_TOKENS:
            self._repair(RepairKind.STRAY_STOP, f"stop token {token} outside a message; skipped")
        elif tok.is_special(token) and token not in (tok.CHANNEL, tok.MESSAGE):
            self._repair(RepairKind.STRAY_SPECIAL, f"special token {token} between messages; skipped")
        else:
            self._repair(RepairKind.MISSING_START, "message began without <|start|>")
            self._begin_header([], implicit=True)
            self._lenient_header(token)

    def _lenient_header(self, token: int) -> None:
        if token == tok.MESSAGE:
            self._begin_content(self._lenient_parse_header(self._lenient_header_text()))
        elif token in tok.STOP_TOKENS:
            self._end_header_without_message(f"stop token {token} ended a header")
        elif token == tok.START and self._header_tokens:
            self._end_header_without_message("<|start|> ended a header")
            self._begin_header([])
        elif token == tok.START:
            self._repair(RepairKind.RESTARTED_HEADER, "<|start|> at the start of a header; started over")
            self._next_role, self._implicit = None, False
        else:
            self._header_tokens.append(token)

    def _lenient_content(self, token: int) -> None:
        if token in tok.STOP_TOKENS:
            self._finish()
        elif token in (tok.START, tok.CHANNEL):
            role = self._header.author.role if self._header is not None else self._default_role
            self._repair(RepairKind.MISSING_END, f"special token {token} inside content closed the open message")
            self._finish()
            self._begin_header([] if token == tok.START else [tok.CHANNEL])
            self._next_role = None if token == tok.START else role
        elif tok.is_special(token):
            self._repair(RepairKind.STRAY_SPECIAL, f"special token {token} inside content; skipped")
        else:
            self._push_content(token)

    def _lenient_header_text(self) -> str:
        data = self._tk.decode_bytes(self._header_tokens)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            self._repair(RepairKind.INVALID_UTF8, f"header is not UTF-8 ({utf8_error_text(e)})", data)
            return data.decode("utf-8", errors="replace")

    def _lenient_parse_header(self, text: str) -> Header:
        reason = ""
        if not self._implicit:  # an implicit header's first word is not a tool name, so skip the strict reading
            try:
                return self._fix_constrain(parse_header(text, self._next_role))
            except HarmonyError as e:
                reason = str(e)
        salvage = salvage_header(text, self._next_role, self._default_role)
        if salvage.notes or not self._implicit:
            detail = "; ".join(salvage.notes if self._implicit else [reason, *salvage.notes])
            self._repair(RepairKind.BAD_HEADER, detail, salvage.leftover.encode())
        return self._fix_constrain(salvage.header)

    def _fix_constrain(self, header: Header) -> Header:
        """`<|channel|>final <|constrain|>json` puts the content type where openai-harmony expects a recipient."""
        if header.recipient is not None and header.recipient.startswith(CONSTRAIN_MARKER) and not header.content_type:
            self._repair(RepairKind.CONSTRAIN_RECIPIENT, f"moved {header.recipient!r} from recipient to content type")
            header.content_type, header.recipient = header.recipient, None
        return header

    def _end_header_without_message(self, why: str) -> None:
        """A header that never reached <|message|>: keep it as a message whose text is the header's leftover."""
        if not self._header_tokens:
            self._state, self._next_role = StreamState.EXPECT_START, None
            return
        text = self._lenient_header_text()
        head, body = split_headerless(text, primed=self._next_role is not None)
        header = self._lenient_parse_header(head)
        self._repair(RepairKind.MISSING_MESSAGE, f"{why} without <|message|>; its text became the content")
        self._append_message(header, body)
        self._header_tokens, self._next_role, self._implicit = [], None, False
