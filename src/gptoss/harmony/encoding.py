"""`HarmonyEncoding`: the object openai-harmony's callers hold; tokenizer, renderer and parser behind one name.

Method names, arguments and defaults follow openai-harmony 0.0.8. As there, a `config` of None means
`auto_drop_analysis=True` for every render method.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence, Set
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import tiktoken

from gptoss.harmony import render
from gptoss.harmony import tokenizer as tok
from gptoss.harmony.errors import HarmonyError
from gptoss.harmony.messages import Conversation, Message, Role, parse_role
from gptoss.harmony.parser import StreamableParser, utf8_error_text


class HarmonyEncodingName(StrEnum):
    HARMONY_GPT_OSS = "HarmonyGptOss"


@dataclass(frozen=True)
class RenderConversationConfig:
    auto_drop_analysis: bool = True


@dataclass(frozen=True)
class RenderOptions:
    conversation_has_function_tools: bool = False


class HarmonyEncoding:
    def __init__(self, name: str, tokenizer: tiktoken.Encoding) -> None:
        self._name = name
        self._tokenizer = tokenizer

    @property
    def name(self) -> str:
        return self._name

    @property
    def tokenizer(self) -> tiktoken.Encoding:
        """The underlying tiktoken encoding (o200k_harmony)."""
        return self._tokenizer

    @property
    def special_tokens_set(self) -> set[str]:
        return set(self._tokenizer.special_tokens_set)

    # ---- tokens ----

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | Set[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        try:
            return self._tokenizer.encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special)
        except ValueError as e:  # tiktoken's disallowed-special message, which openai-harmony also uses
            raise HarmonyError(str(e)) from None

    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        for t in tokens:
            if not tok.in_vocab(t):
                raise HarmonyError(f"Invalid token for decoding: {t}")
        return self._tokenizer.decode_bytes(list(tokens))

    def decode(self, tokens: Sequence[int], errors: str = "replace") -> str:
        return self.decode_bytes(tokens).decode("utf-8", errors=errors)

    def decode_utf8(self, tokens: Sequence[int]) -> str:
        try:
            data = self.decode_bytes(tokens)
        except HarmonyError as e:
            raise HarmonyError(f"Could not decode tokens: Invalid token error: {e}") from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise HarmonyError(f"Could not decode tokens: Invalid utf-8 sequence: {utf8_error_text(e)}") from None

    def is_special_token(self, token: int) -> bool:
        return tok.is_special(token)

    def stop_tokens(self) -> list[int]:
        """<|return|>, <|call|> and <|end|>: every token that ends a message."""
        return sorted(tok.STOP_TOKENS)

    def stop_tokens_for_assistant_actions(self) -> list[int]:
        """<|return|> and <|call|>: stop sampling here (<|end|> only ends an intermediate message)."""
        return sorted(tok.STOP_TOKENS_FOR_ASSISTANT_ACTIONS)

    # ---- rendering ----

    def render(self, message: Message, render_options: RenderOptions | None = None) -> list[int]:
        options = render_options or RenderOptions()
        return render.MessageRenderer(self._tokenizer, options.conversation_has_function_tools).render(message)

    def render_conversation(
        self, conversation: Conversation, config: RenderConversationConfig | None = None
    ) -> list[int]:
        drop = (config or RenderConversationConfig()).auto_drop_analysis
        return render.render_conversation_tokens(self._tokenizer, conversation, drop)

    def render_conversation_for_completion(
        self, conversation: Conversation, next_turn_role: Role | str, config: RenderConversationConfig | None = None
    ) -> list[int]:
        suffix = render.completion_suffix(self._tokenizer, parse_role(next_turn_role, "next_turn_role"))
        return self.render_conversation(conversation, config) + suffix

    def render_conversation_for_training(
        self, conversation: Conversation, config: RenderConversationConfig | None = None
    ) -> list[int]:
        return render.training_tokens(conversation, self.render_conversation(conversation, config))

    # ---- parsing ----

    def parse_messages_from_completion_tokens(
        self, tokens: Sequence[int], role: Role | str | None = None, *, strict: bool = True
    ) -> list[Message]:
        parser = StreamableParser(self, role, strict=strict)
        for t in tokens:
            parser.process(t)
        return parser.process_eos().messages


def load_harmony_encoding(name: str | HarmonyEncodingName) -> HarmonyEncoding:
    """The only encoding is HarmonyGptOss (o200k_harmony); the vocabulary is prepared offline on first use."""
    if name != HarmonyEncodingName.HARMONY_GPT_OSS:
        raise HarmonyError(f"unknown encoding name {name!r} (expected {HarmonyEncodingName.HARMONY_GPT_OSS.value!r})")
    return HarmonyEncoding(HarmonyEncodingName.HARMONY_GPT_OSS.value, tok.o200k_harmony())
