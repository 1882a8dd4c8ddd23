"""The o200k_harmony encoding (o200k_base BPE plus the harmony special tokens) and a streaming detokenizer.

Encoding and decoding run in `tiktoken`; this module only supplies the pieces openai-harmony hard-codes: the
pre-tokenizer regex, the special-token table (which differs from tiktoken's own `o200k_harmony`: no
`<|endofprompt|>`, and `<|reserved_201088|>` exists) and the verified ranks from `vocab.py`.
"""

from __future__ import annotations

import codecs
import functools
from collections.abc import Iterable

import tiktoken

from gptoss.harmony import vocab
from gptoss.harmony.errors import HarmonyError

ENCODING_NAME = "o200k_harmony"

PAT_STR = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)

STARTOFTEXT = 199998
ENDOFTEXT = 199999
RETURN = 200002
CONSTRAIN = 200003
CHANNEL = 200005
START = 200006
END = 200007
MESSAGE = 200008
CALL = 200012

FIRST_SPECIAL = 199998
LAST_SPECIAL = 201088
N_VOCAB = LAST_SPECIAL + 1

NAMED_SPECIALS = {
    "<|startoftext|>": STARTOFTEXT,
    "<|endoftext|>": ENDOFTEXT,
    "<|return|>": RETURN,
    "<|constrain|>": CONSTRAIN,
    "<|channel|>": CHANNEL,
    "<|start|>": START,
    "<|end|>": END,
    "<|message|>": MESSAGE,
    "<|call|>": CALL,
}

STOP_TOKENS = frozenset({RETURN, CALL, END})
STOP_TOKENS_FOR_ASSISTANT_ACTIONS = frozenset({RETURN, CALL})


def special_tokens() -> dict[str, int]:
    """All 1,091 special tokens: the named ones, and `<|reserved_{id}|>` for every other id up to 201088."""
    named_ids = set(NAMED_SPECIALS.values())
    table = dict(NAMED_SPECIALS)
    for token_id in range(200000, LAST_SPECIAL + 1):
        if token_id not in named_ids:
            table[f"<|reserved_{token_id}|>"] = token_id
    return table


@functools.cache
def o200k_harmony() -> tiktoken.Encoding:
    """The encoding, built once per process from the verified vocabulary."""
    _path, data = vocab.verified_vocab()
    return tiktoken.Encoding(
        ENCODING_NAME,
        pat_str=PAT_STR,
        mergeable_ranks=vocab.parse_tiktoken(data),
        special_tokens=special_tokens(),
        explicit_n_vocab=N_VOCAB,
    )


def is_special(token: int) -> bool:
    return FIRST_SPECIAL <= token <= LAST_SPECIAL


def in_vocab(token: int) -> bool:
    return 0 <= token <= LAST_SPECIAL


def check_token(token: int) -> None:
    if not in_vocab(token):
        raise HarmonyError(f"token id {token} is outside the o200k_harmony vocabulary (0..{LAST_SPECIAL})")


def token_bytes(encoding: tiktoken.Encoding, token: int) -> bytes:
    """The bytes of one token (a special token gives its literal text); a clear error for an unknown id."""
    check_token(token)
    return encoding.decode_single_token_bytes(token)


class IncrementalDetokenizer:
    """Token ids in, text out, one token at a time, never emitting part of a UTF-8 character.

    Bytes of a character split across tokens are held until the character completes; invalid sequences become
    U+FFFD (as `bytes.decode(errors="replace")` would). Call `flush()` at the end of the stream.
    """

    def __init__(self, encoding: tiktoken.Encoding | None = None) -> None:
        self._encoding = encoding if encoding is not None else o200k_harmony()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        """The text this token completes ("" while a character is still partial)."""
        return str(self._decoder.decode(token_bytes(self._encoding, token)))

    def push_many(self, tokens: Iterable[int]) -> str:
        return "".join(self.push(t) for t in tokens)

    def flush(self) -> str:
        """End of stream: a trailing partial character becomes U+FFFD."""
        return str(self._decoder.decode(b"", final=True))

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished character are being held."""
        return bool(self._decoder.getstate()[0])
