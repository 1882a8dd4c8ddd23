"""POST /v1/chat/completions: messages -> PromptSpec, output events -> chunks (streamed) or one message.

Reasoning goes to `reasoning` (OpenAI's gpt-oss guidance) and `reasoning_content` (the older convention) alike,
never into `content`, unless the request says `reasoning: {"exclude": true}`; each function call becomes a
`tool_calls` entry whose arguments stream as deltas. `ChatRun` produces the streaming deltas and a non-streaming
response is those same deltas merged, so both paths agree by construction. Stop sequences apply to `content`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from gptoss.engine import Finish, TokenEvent
from gptoss.server import conversation as conv
from gptoss.server.conversation import ItemKind, OutputParser
from gptoss.server.errors import ApiError, bad_request
from gptoss.server.generation import (
    StopMatcher,
    Usage,
    cancelled_error,
    check_fits,
    check_model,
    constraint,
    context_length,
    harmony,
    logit_bias_of,
    logprob_entry,
    new_id,
    now,
    output_events,
    reasoning_budget,
    sampling,
    stop_list,
    stop_tokens,
    submit,
    usage_of,
)
from gptoss.server.protocol import (
    AssistantMessage,
    ChatCompletionRequest,
    ChatJsonSchemaFormat,
    ChatMessage,
    ChatNamedToolChoice,
    JsonObjectFormat,
    ToolMessage,
)
from gptoss.server.responses import EFFORTS, extension, repair_header
from gptoss.server.sse import DONE, frame, on_disconnect, sse_response
from gptoss.server.state import ServerState

# ---- request -> prompt ----


def chat_items(messages: list[ChatMessage]) -> list[conv.Item]:
    items: list[conv.Item] = []
    for m in messages:
        if isinstance(m, AssistantMessage):
            items += assistant_items(m)
        elif isinstance(m, ToolMessage):
            items.append(conv.FunctionOutput(m.tool_call_id, m.content))
        else:
            items.append(conv.Text(m.role, m.content))
    return items


def assistant_items(m: AssistantMessage) -> list[conv.Item]:
    """Reasoning first, then the text (a preamble when calls follow, else the final answer), then the calls."""
    items: list[conv.Item] = []
    reasoning = m.reasoning_content or m.reasoning
    if reasoning:
        items.append(conv.Reasoning(reasoning))
    if m.content:
        items.append(conv.Text("assistant", m.content, "commentary" if m.tool_calls else "final"))
    for call in m.tool_calls or []:
        items.append(conv.FunctionCall(call.id, call.function.name, call.function.arguments))
    return items


def chat_spec(req: ChatCompletionRequest, state: ServerState) -> conv.PromptSpec:
    tools = tuple(
        conv.FunctionTool(f.name, f.description or "", f.parameters, bool(f.strict))
        for f in (t.function for t in req.tools or [])
    )
    choice = req.tool_choice
    if isinstance(choice, ChatNamedToolChoice):
        tool_choice = conv.ToolChoice("function", choice.function.name)
    else:
        tool_choice = conv.ToolChoice(choice or "auto")
    return conv.PromptSpec(
        items=tuple(chat_items(req.messages)),
        tools=tools,
        tool_choice=tool_choice,
        effort=EFFORTS[effort_of(req) or state.config.default_effort],
        response_format=chat_response_format(req),
        date=state.config.today(),
        items_param="messages",
        tools_param="tools[{i}].function.parameters",
        format_param="response_format.json_schema.schema",
    )


def chat_response_format(req: ChatCompletionRequest) -> conv.ResponseFormat | None:
    fmt = req.response_format
    if isinstance(fmt, ChatJsonSchemaFormat):
        spec = fmt.json_schema
        return conv.ResponseFormat(spec.name, spec.schema_, spec.description, bool(spec.strict))
    if isinstance(fmt, JsonObjectFormat):
        return conv.ResponseFormat("json_object", {"type": "object"}, "Respond with one JSON object.")
    return None


def effort_of(req: ChatCompletionRequest) -> str | None:
    return req.reasoning_effort or (req.reasoning.effort if req.reasoning is not None else None)


def max_tokens_of(req: ChatCompletionRequest) -> tuple[int | None, str]:
    if req.max_completion_tokens is not None:
        return req.max_completion_tokens, "max_completion_tokens"
    return req.max_tokens, "max_tokens"


def top_logprobs_of(req: ChatCompletionRequest) -> int | None:
    if req.top_logprobs is not None and not req.logprobs:
        raise bad_request("top_logprobs requires logprobs to be true.", "top_logprobs", "invalid_value")
    return (req.top_logprobs or 0) if req.logprobs else None


# ---- output -> deltas ----


@dataclass
class Delta:
    fields: dict[str, Any]
    logprobs: list[dict[str, Any]] = field(default_factory=list)


class ChatRun:
    """Output events -> chat deltas. Tracks tool-call indices, message separators and stop sequences."""

    def __init__(self, stops: list[str], logprobs: bool, show_reasoning: bool = True) -> None:
        self.matcher = StopMatcher(stops)
        self.logprobs = logprobs
        self.show_reasoning = show_reasoning
        self.kinds: dict[int, ItemKind] = {}  # output item index -> its kind
        self.call_index: dict[int, int] = {}  # output item index -> tool_calls index
        self.wrote_content = False

    @property
    def stopped(self) -> bool:
        return self.matcher.stopped

    def feed(self, out: conv.OutputEvent) -> list[Delta]:
        if isinstance(out, conv.ItemStarted):
            return self.started(out.index, out.item)
        if isinstance(out, conv.TextDelta):
            return self.text(out)
        return []

    def started(self, index: int, item: conv.OutputItem) -> list[Delta]:
        self.kinds[index] = item.kind
        if item.kind is ItemKind.MESSAGE and self.wrote_content:
            return self.content("\n\n", None)  # a second message (after a preamble) starts a new paragraph
        if item.kind is not ItemKind.FUNCTION_CALL:
            return []
        k = self.call_index[index] = len(self.call_index)
        call = {"index": k, "id": new_id("call"), "type": "function", "function": {"name": item.name, "arguments": ""}}
        return [Delta({"tool_calls": [call]})]

    def text(self, out: conv.TextDelta) -> list[Delta]:
        kind = self.kinds[out.index]
        if kind is ItemKind.REASONING:
            return [Delta({"reasoning": out.text, "reasoning_content": out.text})] if self.show_reasoning else []
        if kind is ItemKind.FUNCTION_CALL:
            return [Delta({"tool_calls": [{"index": self.call_index[out.index], "function": {"arguments": out.text}}]})]
        return self.content(out.text, out.event)

    def content(self, text: str, event: TokenEvent | None) -> list[Delta]:
        safe = self.matcher.feed(text)
        self.wrote_content = self.wrote_content or bool(text)
        logprobs = [logprob_entry(event)] if self.logprobs and event is not None and not self.stopped else []
        return [Delta({"content": safe}, logprobs)] if safe or logprobs else []

    def flush(self) -> list[Delta]:
        rest = self.matcher.flush()
        return [Delta({"content": rest})] if rest else []


def finish_reason(run: ChatRun, finish: Finish | None, parser: OutputParser) -> str:
    if run.stopped:
        return "stop"
    if finish is Finish.LENGTH:
        return "length"
    if any(item.kind is ItemKind.FUNCTION_CALL for item in parser.items):
        return "tool_calls"
    return "stop"


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def merge(deltas: list[Delta]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Streaming deltas -> the non-streaming message (and its content logprobs)."""
    content, reasoning, logprobs = "", "", []
    calls: dict[int, dict[str, Any]] = {}
    for d in deltas:
        content += d.fields.get("content", "")
        reasoning += d.fields.get("reasoning_content", "")
        logprobs += d.logprobs
        for call in d.fields.get("tool_calls", []):
            entry = calls.setdefault(call["index"], {"id": call.get("id"), "type": "function", "function": {}})
            fn = entry["function"]
            fn["name"] = call["function"].get("name", fn.get("name"))
            fn["arguments"] = fn.get("arguments", "") + call["function"].get("arguments", "")
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content or None,
        "reasoning": reasoning or None,
        "reasoning_content": reasoning or None,
    }
    if calls:
        message["tool_calls"] = [calls[k] for k in sorted(calls)]
    return message, logprobs


# ---- the handler ----


class ChatPrepared:
    def __init__(self, req: ChatCompletionRequest, state: ServerState) -> None:
        check_model(req.model, state.config.model_name)
        spec = chat_spec(req, state)
        try:
            prompt = conv.render_prompt(spec, harmony())
        except conv.ConversionError as e:
            raise bad_request(str(e), e.param) from None
        max_tokens, param = max_tokens_of(req)
        check_fits(len(prompt.tokens), max_tokens, context_length(state.engine), param)
        top = top_logprobs_of(req)
        params = sampling(req.temperature, req.top_p, req.seed, max_tokens, stop_tokens())
        budget = reasoning_budget(req.max_reasoning_tokens, max_tokens, state.config.max_reasoning_tokens)
        params = replace(params, logit_bias=logit_bias_of(req.logit_bias))
        self.parser = OutputParser(harmony(), [t.name for t in spec.tools])
        show_reasoning = req.reasoning is None or not req.reasoning.exclude
        self.run = ChatRun(stop_list(req.stop), top is not None, show_reasoning)
        self.generation = submit(state.engine, prompt.tokens, params, top, constraint(prompt.rules, budget))
        self.id, self.created, self.model = new_id("chatcmpl"), now(), state.config.model_name
        self.req, self.state = req, state
        self.gone = False

    def client_left(self) -> None:
        self.gone = True
        self.generation.cancel()

    async def deltas(self) -> AsyncIterator[Delta]:
        async for out in output_events(self.generation, self.parser):
            for delta in self.run.feed(out):
                yield delta
            if self.run.stopped:  # a stop sequence: nothing after it is sent
                self.generation.cancel()
                break
        for delta in self.run.flush():
            yield delta

    def extension(self) -> dict[str, Any]:
        """Repaired model output, reported beside OpenAI's fields (the finish_reason stays one of OpenAI's)."""
        return extension(self.state, self.parser.problems)

    def failure(self) -> ApiError | None:
        if self.generation.finish is Finish.ERROR:
            return ApiError(500, f"generation failed: {self.generation.error}", code="server_error")
        if self.generation.finish is Finish.CANCELLED and not self.run.stopped:
            return cancelled_error()
        return None

    def chunk(self, delta: dict[str, Any], logprobs: list[dict[str, Any]] | None = None, **choice: Any) -> bytes:
        lp = {"content": logprobs} if logprobs else None
        body = {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": None, **choice}
        return frame(self.envelope("chat.completion.chunk", choices=[body]))

    def envelope(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            **fields,
        }


async def create_chat_completion(req: ChatCompletionRequest, request: Request, state: ServerState) -> Response:
    prepared = ChatPrepared(req, state)
    if req.stream:
        return sse_response(stream_chat(prepared), state.config.keepalive_seconds, prepared.client_left)
    deltas: list[Delta] = []
    try:
        async with on_disconnect(request, prepared.generation.cancel):
            deltas = [d async for d in prepared.deltas()]
    finally:
        prepared.generation.cancel()
    failure = prepared.failure()
    if failure is not None:
        raise failure
    message, logprobs = merge(deltas)
    reason = finish_reason(prepared.run, prepared.generation.finish, prepared.parser)
    choice = {"index": 0, "message": message, "logprobs": {"content": logprobs} if prepared.run.logprobs else None}
    choice.update(finish_reason=reason)
    usage = usage_dict(usage_of(prepared.generation, prepared.parser))
    ext = prepared.extension()
    body = prepared.envelope("chat.completion", choices=[choice], usage=usage, **ext)
    return JSONResponse(body, headers=repair_header(ext))


async def stream_chat(prepared: ChatPrepared) -> AsyncGenerator[bytes, None]:
    try:
        yield prepared.chunk({"role": "assistant", "content": ""})
        async for delta in prepared.deltas():
            yield prepared.chunk(delta.fields, delta.logprobs)
    finally:
        prepared.generation.cancel()
    if not prepared.gone:
        for chunk in final_chunks(prepared):
            yield chunk


def final_chunks(prepared: ChatPrepared) -> list[bytes]:
    failure = prepared.failure()
    if failure is not None:
        return [frame(failure.body()), DONE]
    reason = finish_reason(prepared.run, prepared.generation.finish, prepared.parser)
    body = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}
    chunks = [frame(prepared.envelope("chat.completion.chunk", choices=[body], **prepared.extension()))]
    options = prepared.req.stream_options
    if options is not None and options.include_usage:
        usage = usage_dict(usage_of(prepared.generation, prepared.parser))
        chunks.append(frame(prepared.envelope("chat.completion.chunk", choices=[], usage=usage)))
    return [*chunks, DONE]
