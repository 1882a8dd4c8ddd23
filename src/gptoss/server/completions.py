"""POST /v1/completions: a raw prompt (text, harmony special tokens allowed, or token ids) -> raw text.

No harmony parsing here: the text is exactly what the model wrote, special tokens included (whether a turn ended
in `<|call|>` or `<|return|>` matters to a raw client). Generation stops at those two tokens, at a stop sequence,
or at max_tokens (default 16, as in OpenAI's API).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from gptoss.engine import Finish, TokenEvent
from gptoss.harmony import HarmonyError, IncrementalDetokenizer
from gptoss.server.errors import ApiError, bad_request
from gptoss.server.generation import (
    StopMatcher,
    Usage,
    cancelled_error,
    check_fits,
    check_model,
    context_length,
    harmony,
    logit_bias_of,
    new_id,
    now,
    sampling,
    stop_list,
    stop_tokens,
    submit,
    usage_of,
)
from gptoss.server.protocol import CompletionRequest
from gptoss.server.sse import DONE, frame, on_disconnect, sse_response
from gptoss.server.state import ServerState


def prompt_tokens(prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, list):
        vocab = harmony().tokenizer.n_vocab
        bad = next((i for i, t in enumerate(prompt) if not 0 <= t < vocab), None)
        if bad is not None:
            raise bad_request(
                f"token id {prompt[bad]} at index {bad} is outside the vocabulary (0..{vocab - 1})", "prompt"
            )
        return prompt
    try:
        return harmony().encode(prompt, allowed_special="all")
    except HarmonyError as e:
        raise bad_request(f"cannot tokenize the prompt: {e}", "prompt") from None


class LegacyLogprobs:
    """The completions API's column-wise logprobs: tokens, token_logprobs, top_logprobs, text_offset."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}

    def add(self, event: TokenEvent, offset: int) -> dict[str, list[Any]]:
        text = harmony().decode([event.token])
        row: dict[str, list[Any]] = {
            "tokens": [text],
            "token_logprobs": [event.logprob],
            "top_logprobs": [{harmony().decode([t]): lp for t, lp in event.top_logprobs}],
            "text_offset": [offset],
        }
        for key, values in row.items():
            self.columns[key] += values
        return row


class CompletionRun:
    def __init__(self, req: CompletionRequest, state: ServerState) -> None:
        check_model(req.model, state.config.model_name)
        tokens = prompt_tokens(req.prompt)
        check_fits(len(tokens), req.max_tokens, context_length(state.engine), "max_tokens")
        params = sampling(req.temperature, req.top_p, req.seed, req.max_tokens, stop_tokens())
        params = replace(params, logit_bias=logit_bias_of(req.logit_bias))
        self.generation = submit(state.engine, tokens, params, req.logprobs)
        self.detokenizer = IncrementalDetokenizer(harmony().tokenizer)
        self.matcher = StopMatcher(stop_list(req.stop))
        self.logprobs = LegacyLogprobs() if req.logprobs is not None else None
        self.text = ""
        self.token_ids: list[int] = []  # every token the model produced (a stop sequence may cut the text, not these)
        self.id, self.created, self.model, self.req = new_id("cmpl"), now(), state.config.model_name, req
        self.gone = False

    def client_left(self) -> None:
        self.gone = True
        self.generation.cancel()

    async def pieces(self) -> AsyncIterator[tuple[str, dict[str, list[Any]] | None, list[int]]]:
        """(text, logprobs row, token ids since the last piece) per token, cut at a stop sequence."""
        sent = 0
        async for event in self.generation:
            self.token_ids.append(event.token)
            safe = self.matcher.feed(self.detokenizer.push(event.token))
            row = self.logprobs.add(event, len(self.text)) if self.logprobs is not None else None
            self.text += safe
            if safe or row or self.req.return_token_ids:
                yield safe, row, self.token_ids[sent:]
                sent = len(self.token_ids)
            if self.matcher.stopped:
                self.generation.cancel()
                break
        rest = self.matcher.feed(self.detokenizer.flush()) + self.matcher.flush()
        self.text += rest
        if rest:
            yield rest, None, self.token_ids[sent:]

    def choice(self, text: str, logprobs: Any, finish_reason: str | None, ids: list[int]) -> dict[str, Any]:
        out = {"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish_reason}
        if self.req.return_token_ids:
            out["token_ids"] = ids
        return out

    def finish_reason(self) -> str:
        if self.generation.finish is Finish.ERROR:
            raise ApiError(500, f"generation failed: {self.generation.error}", code="server_error")
        if self.generation.finish is Finish.CANCELLED and not self.matcher.stopped:
            raise cancelled_error()
        return "length" if self.generation.finish is Finish.LENGTH and not self.matcher.stopped else "stop"

    def body(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> dict[str, Any]:
        out = {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model}
        out["choices"] = choices
        if usage is not None:
            out["usage"] = {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.total,
                "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
            }
        return out


async def create_completion(req: CompletionRequest, request: Request, state: ServerState) -> Response:
    run = CompletionRun(req, state)
    if req.stream:
        return sse_response(stream_completion(run), state.config.keepalive_seconds, run.client_left)
    try:
        async with on_disconnect(request, run.generation.cancel):
            async for _ in run.pieces():
                pass
    finally:
        run.generation.cancel()
    logprobs = run.logprobs.columns if run.logprobs is not None else None
    choice = run.choice(run.text, logprobs, run.finish_reason(), run.token_ids)
    return JSONResponse(run.body([choice], usage_of(run.generation, None)))


async def stream_completion(run: CompletionRun) -> AsyncGenerator[bytes, None]:
    try:
        async for text, row, ids in run.pieces():
            yield frame(run.body([run.choice(text, row, None, ids)]))
    finally:
        run.generation.cancel()
    if not run.gone:
        for chunk in final_chunks(run):
            yield chunk


def final_chunks(run: CompletionRun) -> list[bytes]:
    try:
        reason = run.finish_reason()
    except ApiError as e:
        return [frame(e.body()), DONE]
    chunks = [frame(run.body([run.choice("", None, reason, [])]))]
    options = run.req.stream_options
    if options is not None and options.include_usage:
        chunks.append(frame(run.body([], usage_of(run.generation, None))))
    return [*chunks, DONE]
