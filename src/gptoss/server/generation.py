"""What every endpoint does around the engine: check the request fits, submit it, and read its output."""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from gptoss.config import ModelConfig
from gptoss.engine import Engine, EngineNotReadyError, Generation, QueueFullError, TokenEvent
from gptoss.errors import InputError
from gptoss.harmony import HarmonyEncoding, HarmonyEncodingName, load_harmony_encoding
from gptoss.harmony.constraint import SchemaError, TurnConstraint, turn_grammar
from gptoss.harmony.grammar import TurnRules
from gptoss.sampling import SamplingParams
from gptoss.server.conversation import OutputEvent, OutputParser
from gptoss.server.errors import ApiError, bad_request
from gptoss.server.inflight import track


@functools.cache
def harmony() -> HarmonyEncoding:
    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


def check_model(requested: str | None, served: str) -> None:
    """The served id, or it with a hub org in front (`openai/gpt-oss-20b` for a server of `gpt-oss-20b`)."""
    if requested is not None and requested != served and not requested.endswith("/" + served):
        raise ApiError(
            404, f"The model '{requested}' does not exist. This server serves '{served}'.", "model", "model_not_found"
        )


def logit_bias_of(bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    """OpenAI's logit_bias (token id strings, already range-checked) as SamplingParams wants it."""
    pairs = tuple((int(k), float(v)) for k, v in (bias or {}).items())
    for token, _ in pairs:
        if token >= VOCAB:
            raise bad_request(f"logit_bias: token {token} is outside the vocabulary ({VOCAB} tokens).", "logit_bias")
    return pairs


def check_fits(prompt_tokens: int, max_tokens: int | None, context: int, param: str) -> None:
    """400 when max_tokens alone exceeds the context, or the prompt plus max_tokens does not fit."""
    if max_tokens is not None and max_tokens > context:
        raise bad_request(
            f"{param} is too large: {max_tokens}. This model's context is {context} tokens (prompt + output).",
            param,
            "invalid_value",
        )
    wanted = prompt_tokens + (max_tokens or 1)
    if wanted > context:
        asked = f"{max_tokens} in the output" if max_tokens is not None else "at least 1 in the output"
        raise bad_request(
            f"This model's maximum context length is {context} tokens. However, you requested {wanted} tokens "
            f"({prompt_tokens} in the prompt, {asked}). Please reduce the length of the prompt or {param}.",
            param if max_tokens is not None else None,
            "context_length_exceeded",
        )


def sampling(
    temperature: float | None,
    top_p: float | None,
    seed: int | None,
    max_tokens: int | None,
    stop_tokens: Sequence[int],
) -> SamplingParams:
    """OpenAI's defaults (temperature 1, top_p 1), which are also gpt-oss's recommended settings."""
    t = 1.0 if temperature is None else temperature
    p = 1.0 if top_p is None else top_p
    return SamplingParams(temperature=t, top_p=p, seed=seed, max_tokens=max_tokens, stop_tokens=frozenset(stop_tokens))


def not_ready(e: EngineNotReadyError) -> ApiError:
    if getattr(e, "unavailable", False):  # it will not become ready (a tensor-parallel rank failed)
        return ApiError(503, f"The model is unavailable: {e}.", code="model_unavailable")
    message = f"The model is still loading: {e}; retry shortly."
    return ApiError(503, message, code="model_loading", headers={"Retry-After": "1"})


def context_length(engine: Engine) -> int:
    try:
        return engine.context_length
    except EngineNotReadyError as e:
        raise not_ready(e) from None


REASONING_SHARE = 2  # with a client's output limit, free reasoning gets at most 1/REASONING_SHARE of it
VOCAB = ModelConfig().vocab_size  # every gpt-oss model's vocabulary: the length of the logits a mask covers


def reasoning_budget(requested: int | None, max_tokens: int | None, server_max: int) -> int:
    """Free reasoning tokens a constrained turn may spend before it must write the structured part: the request's
    own `max_reasoning_tokens`, else the server's limit, capped at half the output budget when one is set."""
    if requested is not None:
        return requested
    return server_max if max_tokens is None else min(server_max, max_tokens // REASONING_SHARE)


def constraint(rules: TurnRules, budget: int) -> TurnConstraint | None:
    """The token-level constraint that enforces the turn's rules; None when nothing needs enforcing."""
    if not rules.constrained:
        return None
    try:
        return TurnConstraint(turn_grammar(harmony(), rules), VOCAB, budget)
    except SchemaError as e:
        raise bad_request(str(e), e.param) from None


def logprob_entry(event: TokenEvent) -> dict[str, Any]:
    """One token's logprob and its alternatives, as both APIs report them."""

    def one(token: int, logprob: float) -> dict[str, Any]:
        data = harmony().decode_bytes([token])
        return {"token": data.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(data)}

    return {**one(event.token, event.logprob or 0.0), "top_logprobs": [one(t, lp) for t, lp in event.top_logprobs]}


def submit(
    engine: Engine,
    tokens: Sequence[int],
    params: SamplingParams,
    top_logprobs: int | None = None,
    constraint: TurnConstraint | None = None,
) -> Generation:
    try:
        return track(engine.submit(tokens, params, top_logprobs, constraint))  # cancelled when its request ends
    except EngineNotReadyError as e:
        raise not_ready(e) from None
    except QueueFullError as e:
        raise ApiError(429, str(e), code="queue_full", headers={"Retry-After": "1"}) from None
    except InputError as e:
        raise bad_request(str(e), code="invalid_prompt") from None


def cancelled_error() -> ApiError:
    """Why a generation ended early when neither a stop sequence nor its client ended it: the end of a shutdown
    drain (server.edge) cancels whatever is still running."""
    message = "The generation was cancelled before it finished: the server is shutting down. Retry the request."
    return ApiError(503, message, code="server_shutdown", headers={"Retry-After": "1"})


def stop_tokens() -> list[int]:
    """<|return|> and <|call|>: where the assistant's turn ends (<|end|> only ends an intermediate message)."""
    return harmony().stop_tokens_for_assistant_actions()


async def output_events(generation: Generation, parser: OutputParser) -> AsyncIterator[OutputEvent]:
    async for event in generation:
        for out in parser.feed(event):
            yield out
    for out in parser.finish():
        yield out


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cached_tokens: int = 0  # prompt tokens served from the prefix cache

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.output_tokens


def usage_of(generation: Generation, parser: OutputParser | None) -> Usage:
    reasoning = parser.reasoning_tokens if parser is not None else 0
    stats = generation.stats
    return Usage(stats.prompt_tokens, stats.output_tokens, reasoning, stats.cached_tokens)


class StopMatcher:
    """Cuts a text stream at the first of the stop sequences, holding back only text that may begin one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.buffer = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The text now safe to emit; after a stop sequence, nothing more."""
        if self.stopped:
            return ""
        self.buffer += text
        cut = min((i for i in (self.buffer.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self.buffer = self.buffer[:cut], ""
            return out
        keep = self._possible_start()
        out, self.buffer = self.buffer[: len(self.buffer) - keep], self.buffer[len(self.buffer) - keep :]
        return out

    def _possible_start(self) -> int:
        """Length of the longest end of the buffer that is the beginning of a stop sequence."""
        ends = (k for s in self.stops for k in range(min(len(s) - 1, len(self.buffer)), 0, -1))
        return max((k for k in ends if any(self.buffer.endswith(s[:k]) for s in self.stops)), default=0)

    def flush(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out


def stop_list(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])
