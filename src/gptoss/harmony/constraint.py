"""Constrained decoding of an assistant turn: the `TurnRules` grammar run by llguidance as a `TokenConstraint`.

The engine asks `mask()` before each token and calls `advance(token)` right after choosing it; `advance` starts
the next mask on a worker thread (llguidance drops the GIL), so it is computed while the forward pass of that token
runs. Reasoning is free but budgeted: once the free messages (analysis, preambles) have used `reasoning_budget`
tokens, the grammar switches to its CLOSING variant, which ends the open message and allows only the ending (after
at most three more tokens when the budget ran out inside a UTF-8 character: they complete it).
"""

from __future__ import annotations

import functools
import logging
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import jsonschema
import llguidance
import llguidance.tiktoken
import llguidance.torch
import numpy as np
import torch

from gptoss.harmony.encoding import HarmonyEncoding
from gptoss.harmony.grammar import TurnRules, Variant, json_options, lark

log = logging.getLogger("gptoss.constraint")
_masks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gptoss-mask")
UNIMPLEMENTED = re.compile(r"Unimplemented keys: \[(.*)\]")


class SchemaError(ValueError):
    """A schema the engine cannot enforce or that is not valid; `param` names the request field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@functools.cache
def tokenizer(encoding: HarmonyEncoding) -> llguidance.LLTokenizer:
    """llguidance's view of o200k_harmony (~1 s to build, so once per process); `<|return|>` ends a turn."""
    end = encoding.encode("<|return|>", allowed_special="all")[0]
    return llguidance.tiktoken.lltokenizer_from_encoding(encoding.tokenizer, eos_token=end)


def check_schema(schema: Any, strict: bool, param: str) -> None:
    """SchemaError for a schema that is not valid JSON Schema, or (strict) that uses a keyword the engine cannot
    enforce; the message names the keyword."""
    if not isinstance(schema, dict):
        raise SchemaError(f"invalid JSON Schema: expected an object, got {type(schema).__name__}", param)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path)
        raise SchemaError(f"invalid JSON Schema{' at ' + where if where else ''}: {e.message}", param) from None
    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=json_options(strict))
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if not failed:
        for message in messages:  # not strict: what cannot be enforced is ignored, and said so
            log.warning("%s: not enforced (the schema is not strict): %s", param, message)
        return
    unsupported = UNIMPLEMENTED.search(messages[0])
    if unsupported is not None:
        keys = unsupported.group(1).replace('"', "'")
        raise SchemaError(
            f"this server cannot enforce the JSON Schema keyword(s) {keys} in strict mode; remove them or set "
            "strict to false (they are then ignored)",
            param,
        )
    raise SchemaError(f"invalid JSON Schema: {messages[0]}", param)


@functools.lru_cache(maxsize=256)
def compiled(encoding: HarmonyEncoding, grammar: str) -> llguidance.LLMatcher:
    """A pristine matcher per distinct grammar (compiled once); each generation runs a deep copy."""
    matcher = llguidance.LLMatcher(tokenizer(encoding), llguidance.LLMatcher.grammar_from_lark(grammar), log_level=0)
    if matcher.is_error():
        raise SchemaError(f"the output grammar does not compile: {matcher.get_error()}")
    return matcher


@dataclass(frozen=True)
class TurnGrammar:
    """The three compiled variants of one turn's rules."""

    encoding: HarmonyEncoding
    rules: TurnRules

    def matcher(self, variant: Variant) -> llguidance.LLMatcher:
        return compiled(self.encoding, lark(self.rules, variant)).deep_copy()


def turn_grammar(encoding: HarmonyEncoding, rules: TurnRules) -> TurnGrammar:
    """Compiles (or finds cached) every variant now, so a bad grammar fails before the request is queued."""
    for variant in Variant:
        compiled(encoding, lark(rules, variant))
    return TurnGrammar(encoding, rules)


@functools.cache
def continuation_tokens(encoding: HarmonyEncoding, vocab_size: int) -> torch.Tensor:
    """(4, V) bool: row k marks the tokens made of 1..k UTF-8 continuation bytes (0x80-0xBF) and nothing else."""
    rows = torch.zeros(4, vocab_size, dtype=torch.bool)
    for token in range(min(vocab_size, encoding.tokenizer.n_vocab)):
        try:
            data = encoding.tokenizer.decode_single_token_bytes(token)
        except KeyError:  # an id between the ranks and the special tokens
            continue
        if 0 < len(data) <= 3 and all(0x80 <= b <= 0xBF for b in data):
            rows[len(data) :, token] = True
    return rows


def utf8_missing(tail: bytes) -> int:
    """How many bytes the last character of `tail` still lacks (0 when it ends on a character boundary)."""
    for back in range(1, min(4, len(tail)) + 1):
        b = tail[-back]
        if b < 0x80:
            return 0
        if b >= 0xC0:  # a lead byte: its length from the high bits
            length = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return max(0, length - back)
    return 0


class _Header:
    """Follows the harmony structure of the output to tell free message content (what the budget counts)."""

    def __init__(self, encoding: HarmonyEncoding) -> None:
        special = {name: encoding.encode(f"<|{name}|>", allowed_special="all")[0] for name in _SPECIALS}
        self.channel, self.message = special["channel"], special["message"]
        self.closers = {special["end"], special["call"], special["return"]}
        self.encoding = encoding
        self.header: list[int] | None = None  # tokens since <|channel|>, until <|message|>
        self.free = False  # inside an analysis message or a preamble
        self.tail = b""  # the last bytes of the free message's text (to close it on a character boundary)

    def push(self, token: int) -> None:
        if token == self.channel:
            self.header, self.free = [], False
        elif token == self.message and self.header is not None:
            self.free = self.encoding.decode(self.header).strip() in ("analysis", "commentary")
            self.header, self.tail = None, b""
        elif token in self.closers:
            self.free = False
        elif self.header is not None:
            self.header.append(token)
        elif self.free:
            self.tail = (self.tail + self.encoding.tokenizer.decode_single_token_bytes(token))[-4:]


_SPECIALS = ("channel", "message", "end", "call", "return")


class TurnConstraint:
    """A `TokenConstraint` over one generation of an assistant turn (one per request; not thread-safe)."""

    def __init__(self, grammar: TurnGrammar, vocab_size: int, reasoning_budget: int | None = None) -> None:
        if reasoning_budget is not None and reasoning_budget < 0:
            raise ValueError(f"reasoning_budget must be >= 0, got {reasoning_budget}")
        self.grammar = grammar
        self.vocab_size = vocab_size
        self.budget = reasoning_budget
        self.reasoning_tokens = 0
        self.closed = reasoning_budget == 0  # no more free messages may start
        self._finish_char = 0  # bytes still missing from the character the budget cut
        self._matcher = grammar.matcher(Variant.DIRECT if self.closed else Variant.FULL)
        self._header = _Header(grammar.encoding)
        self._bits = llguidance.torch.allocate_token_bitmask(1, tokenizer(grammar.encoding).vocab_size)
        self._next: Future[torch.Tensor] = _masks.submit(self._compute)

    def mask(self) -> torch.Tensor:
        mask = self._next.result()
        if self._finish_char:  # the budget ran out inside a character: only its missing bytes may come
            return mask & continuation_tokens(self.grammar.encoding, self.vocab_size)[self._finish_char]
        return mask

    def advance(self, token: int) -> None:
        self._next.result()  # the matcher is not shared with a running mask computation
        header = self._header
        was_free = header.free
        header.push(token)
        if was_free and header.free and not self.closed:
            self.reasoning_tokens += 1
        if not self._matcher.consume_token(token):
            raise RuntimeError(f"constrained decoding: token {token} rejected: {self._matcher.get_error()}")
        spent = self.budget is not None and self.reasoning_tokens >= self.budget
        self._finish_char = 0
        if header.free and spent and not self.closed:
            self._finish_char = utf8_missing(header.tail)
            if not self._finish_char:
                self._matcher, self.closed = self.grammar.matcher(Variant.CLOSING), True
        self._next = _masks.submit(self._compute)

    @property
    def done(self) -> bool:
        return bool(self._matcher.is_stopped())

    def _compute(self) -> torch.Tensor:
        if self._matcher.is_stopped():  # the turn is over; the engine stops on the stop token
            return torch.ones(self.vocab_size, dtype=torch.bool)
        llguidance.torch.fill_next_token_bitmask(self._matcher, self._bits)
        bits = np.unpackbits(self._bits.numpy().view(np.uint8), bitorder="little")
        allowed = torch.zeros(self.vocab_size, dtype=torch.bool)
        n = min(self.vocab_size, len(bits))
        allowed[:n] = torch.from_numpy(bits[:n].astype(np.bool_))
        return allowed
