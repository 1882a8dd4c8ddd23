"""POST/GET/DELETE /v1/responses: request -> PromptSpec, output events -> Responses items and SSE events.

`ResponseRun` is the one builder of a response: it turns output events into the streaming events (with sequence
numbers) and keeps the response object up to date, so a non-streaming response is exactly the `response.completed`
payload a streaming client would get.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from gptoss.engine import Finish, Generation
from gptoss.harmony import ReasoningEffort
from gptoss.server import conversation as conv
from gptoss.server.conversation import ItemKind, OutputItem, OutputParser, Problem
from gptoss.server.errors import ApiError, bad_request
from gptoss.server.generation import (
    check_fits,
    check_model,
    context_length,
    harmony,
    new_id,
    now,
    output_events,
    sampling,
    stop_tokens,
    submit,
    usage_of,
)
from gptoss.server.protocol import (
    FunctionCallInput,
    FunctionCallOutputInput,
    InputItem,
    JsonObjectFormat,
    MessageInput,
    NamedFunctionChoice,
    ReasoningInput,
    ResponsesJsonSchemaFormat,
    ResponsesRequest,
)
from gptoss.server.sse import frame, on_disconnect, sse_response
from gptoss.server.state import ServerState
from gptoss.server.store import Stored

EFFORTS = {
    "minimal": ReasoningEffort.LOW,
    "low": ReasoningEffort.LOW,
    "medium": ReasoningEffort.MEDIUM,
    "high": ReasoningEffort.HIGH,
}
ITEM_PREFIX = {ItemKind.REASONING: "rs", ItemKind.MESSAGE: "msg", ItemKind.FUNCTION_CALL: "fc"}

# ---- request -> prompt ----


def input_items(value: str | list[InputItem]) -> list[conv.Item]:
    if isinstance(value, str):
        return [conv.Text("user", value)] if value else []
    return [input_item(item) for item in value]


def input_item(item: InputItem) -> conv.Item:
    if isinstance(item, MessageInput):
        channel = None if item.role != "assistant" else ("commentary" if item.phase == "commentary" else "final")
        return conv.Text(item.role, item.content, channel)
    if isinstance(item, ReasoningInput):
        parts = item.content if item.content is not None else item.summary
        return conv.Reasoning("".join(p.text for p in parts))
    if isinstance(item, FunctionCallInput):
        return conv.FunctionCall(item.call_id, item.name, item.arguments)
    assert isinstance(item, FunctionCallOutputInput)
    return conv.FunctionOutput(item.call_id, item.output)


def tool_choice(req: ResponsesRequest) -> conv.ToolChoice:
    choice = req.tool_choice
    if isinstance(choice, NamedFunctionChoice):
        return conv.ToolChoice("function", choice.name)
    return conv.ToolChoice(choice or "auto")


def response_format(req: ResponsesRequest) -> conv.ResponseFormat | None:
    fmt = req.text.format if req.text is not None else None
    if isinstance(fmt, ResponsesJsonSchemaFormat):
        return conv.ResponseFormat(fmt.name, fmt.schema_, fmt.description)
    if isinstance(fmt, JsonObjectFormat):
        return conv.ResponseFormat("json_object", {"type": "object"}, "Respond with one JSON object.")
    return None


def effort_of(req: ResponsesRequest, default: str) -> ReasoningEffort:
    chosen = req.reasoning.effort if req.reasoning is not None else None
    return EFFORTS[chosen or default]


def prompt_spec(
    req: ResponsesRequest, items: list[conv.Item], instructions: str | None, state: ServerState
) -> conv.PromptSpec:
    tools = tuple(conv.FunctionTool(t.name, t.description or "", t.parameters) for t in req.tools or [])
    return conv.PromptSpec(
        items=tuple(items),
        instructions=instructions,
        tools=tools,
        tool_choice=tool_choice(req),
        effort=effort_of(req, state.config.default_effort),
        response_format=response_format(req),
        date=state.config.today(),
        items_param="input",
    )


def previous(req: ResponsesRequest, state: ServerState) -> Stored | None:
    if req.previous_response_id is None:
        return None
    stored = state.store.get(req.previous_response_id)
    if stored is None:
        raise bad_request(
            f"Previous response with id '{req.previous_response_id}' not found.", "previous_response_id", "not_found"
        )
    return stored


# ---- output -> response object and events ----


def output_item(kind: ItemKind, item_id: str, call_id: str | None, item: OutputItem, status: str) -> dict[str, Any]:
    if kind is ItemKind.REASONING:
        content = [{"type": "reasoning_text", "text": item.text}] if status != "in_progress" else []
        return {"id": item_id, "type": "reasoning", "summary": [], "content": content, "status": status}
    if kind is ItemKind.FUNCTION_CALL:
        arguments = item.text if status != "in_progress" else ""
        return {
            "id": item_id,
            "type": "function_call",
            "call_id": call_id,
            "name": item.name,
            "arguments": arguments,
            "status": status,
        }
    content = [text_part(item.text)] if status != "in_progress" else []
    phase = "commentary" if item.channel == "commentary" else "final_answer"
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content, "phase": phase}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def part_of(item: OutputItem) -> dict[str, Any]:
    if item.kind is ItemKind.REASONING:
        return {"type": "reasoning_text", "text": item.text}
    return text_part(item.text)


def problem_dicts(problems: list[Problem]) -> list[dict[str, str]]:
    return [{"kind": p.kind, "detail": p.detail, "text": p.text} for p in problems]


def outcome(
    generation: Generation, problems: list[Problem]
) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
    """(status, incomplete_details, error). Repaired output makes a response incomplete, with the repairs listed."""
    if generation.finish is Finish.ERROR:
        return "failed", None, {"code": "server_error", "message": f"generation failed: {generation.error}"}
    reason = {Finish.LENGTH: "max_output_tokens", Finish.CANCELLED: "cancelled"}.get(generation.finish or Finish.STOP)
    if reason is None and problems:
        reason = "invalid_output"
    if reason is None:
        return "completed", None, None
    details: dict[str, Any] = {"reason": reason}
    if problems:
        details["problems"] = problem_dicts(problems)
    return "incomplete", details, None


class ResponseRun:
    """Builds one response: feed output events, get Responses streaming events; `response` is always current."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response
        self.sequence = 0
        self.item_ids: list[str] = []
        self.call_ids: list[str | None] = []

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        snapshot = dict(self.response, output=[])
        return [
            self.event("response.created", response=snapshot),
            self.event("response.in_progress", response=snapshot),
        ]

    def feed(self, out: conv.OutputEvent) -> list[dict[str, Any]]:
        if isinstance(out, conv.ItemStarted):
            return self.started(out.index, out.item)
        if isinstance(out, conv.TextDelta):
            return self.delta(out.index, out.text)
        return self.done(out.index, out.item)

    def started(self, index: int, item: OutputItem) -> list[dict[str, Any]]:
        item_id = new_id(ITEM_PREFIX[item.kind])
        call_id = new_id("call") if item.kind is ItemKind.FUNCTION_CALL else None
        self.item_ids.append(item_id)
        self.call_ids.append(call_id)
        body = output_item(item.kind, item_id, call_id, item, "in_progress")
        self.response["output"].append(body)
        events = [self.event("response.output_item.added", output_index=index, item=dict(body))]
        if item.kind is not ItemKind.FUNCTION_CALL:
            empty = {**part_of(item), "text": ""}
            events.append(
                self.event(
                    "response.content_part.added", item_id=item_id, output_index=index, content_index=0, part=empty
                )
            )
        return events

    def delta(self, index: int, text: str) -> list[dict[str, Any]]:
        body, item_id = self.response["output"][index], self.item_ids[index]
        where = {"item_id": item_id, "output_index": index}
        if body["type"] == "function_call":
            return [self.event("response.function_call_arguments.delta", **where, delta=text)]
        if body["type"] == "reasoning":
            return [self.event("response.reasoning_text.delta", **where, content_index=0, delta=text)]
        return [self.event("response.output_text.delta", **where, content_index=0, delta=text, logprobs=[])]

    def done(self, index: int, item: OutputItem) -> list[dict[str, Any]]:
        status = "incomplete" if item.truncated else "completed"
        body = output_item(item.kind, self.item_ids[index], self.call_ids[index], item, status)
        self.response["output"][index] = body
        where = {"item_id": self.item_ids[index], "output_index": index}
        if item.kind is ItemKind.FUNCTION_CALL:
            events = [self.event("response.function_call_arguments.done", **where, name=item.name, arguments=item.text)]
        else:
            kind = "response.reasoning_text.done" if item.kind is ItemKind.REASONING else "response.output_text.done"
            extra: dict[str, Any] = {} if item.kind is ItemKind.REASONING else {"logprobs": []}
            events = [
                self.event(kind, **where, content_index=0, text=item.text, **extra),
                self.event("response.content_part.done", **where, content_index=0, part=part_of(item)),
            ]
        return [*events, self.event("response.output_item.done", output_index=index, item=body)]

    def finish(self, generation: Generation, parser: OutputParser) -> dict[str, Any]:
        status, details, error = outcome(generation, parser.problems)
        usage = usage_of(generation, parser)
        self.response.update(
            status=status,
            incomplete_details=details,
            error=error,
            completed_at=now() if status == "completed" else None,
            usage={
                "input_tokens": usage.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": usage.output_tokens,
                "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
                "total_tokens": usage.total,
            },
        )
        kind = {"completed": "response.completed", "failed": "response.failed"}.get(status, "response.incomplete")
        return self.event(kind, response=self.response)


def response_skeleton(
    req: ResponsesRequest, response_id: str, instructions: str | None, state: ServerState
) -> dict[str, Any]:
    fmt = req.text.format if req.text is not None and req.text.format is not None else None
    choice = req.tool_choice
    return {
        "id": response_id,
        "object": "response",
        "created_at": now(),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": instructions,
        "max_output_tokens": req.max_output_tokens,
        "model": state.config.model_name,
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": req.previous_response_id,
        "reasoning": {"effort": effort_of(req, state.config.default_effort).value.lower(), "summary": None},
        "store": req.store is not False,
        "temperature": 1.0 if req.temperature is None else req.temperature,
        "text": {"format": fmt.model_dump(by_alias=True) if fmt is not None else {"type": "text"}},
        "tool_choice": choice.model_dump() if isinstance(choice, NamedFunctionChoice) else (choice or "auto"),
        "tools": [t.model_dump(exclude_none=True) for t in req.tools or []],
        "top_p": 1.0 if req.top_p is None else req.top_p,
        "truncation": "disabled",
        "usage": None,
        "user": req.user,
        "metadata": req.metadata or {},
    }


# ---- the handler ----


class Prepared:
    """A validated, submitted request and everything needed to answer it."""

    def __init__(self, req: ResponsesRequest, state: ServerState) -> None:
        check_model(req.model, state.config.model_name)
        stored = previous(req, state)
        history = [conv.item_from_dict(d) for d in stored.history] if stored is not None else []
        inherited = stored.response.get("instructions") if stored is not None else None
        self.instructions = req.instructions if req.instructions is not None else inherited
        self.items = history + input_items(req.input)
        spec = prompt_spec(req, self.items, self.instructions, state)
        try:
            prompt = conv.render_prompt(spec, harmony())
        except conv.ConversionError as e:
            raise bad_request(str(e), e.param) from None
        check_fits(len(prompt.tokens), req.max_output_tokens, context_length(state.engine), "max_output_tokens")
        params = sampling(req.temperature, req.top_p, None, req.max_output_tokens, stop_tokens())
        self.parser = OutputParser(harmony(), prompt.forced, [t.name for t in spec.tools])
        self.run = ResponseRun(response_skeleton(req, new_id("resp"), self.instructions, state))
        self.generation = submit(state.engine, prompt.tokens, params)
        self.req, self.state = req, state
        self.gone = False

    def client_left(self) -> None:
        self.gone = True
        self.generation.cancel()

    def conclude(self) -> dict[str, Any]:
        """The final event; stores the response when asked to (the default) and it was not cut off by the client."""
        final = self.run.finish(self.generation, self.parser)
        self.state.count_problems(self.parser.problems)
        response = self.run.response
        keep = self.generation.finish not in (Finish.ERROR, Finish.CANCELLED)
        if self.req.store is not False and keep:
            outputs = conv.output_to_history(self.parser.items, self.run.call_ids)
            history = [conv.item_to_dict(i) for i in self.items + outputs]
            if not self.state.store.put(response["id"], response, history):
                response["store"] = False
        return final


async def create_response(req: ResponsesRequest, request: Request, state: ServerState) -> Response:
    prepared = Prepared(req, state)
    if req.stream:
        return sse_response(stream_response(prepared), state.config.keepalive_seconds, prepared.client_left)
    try:
        async with on_disconnect(request, prepared.generation.cancel):
            async for out in output_events(prepared.generation, prepared.parser):
                prepared.run.feed(out)
    finally:
        prepared.generation.cancel()
    prepared.conclude()
    return JSONResponse(prepared.run.response)


async def stream_response(prepared: Prepared) -> AsyncGenerator[bytes, None]:
    try:
        for event in prepared.run.start():
            yield frame(event, event["type"])
        async for out in output_events(prepared.generation, prepared.parser):
            for event in prepared.run.feed(out):
                yield frame(event, event["type"])
    finally:
        prepared.generation.cancel()  # no-op when finished; frees the engine if the stream was abandoned
    final = prepared.conclude()
    if not prepared.gone:
        yield frame(final, final["type"])


def get_response(response_id: str, state: ServerState) -> dict[str, Any]:
    stored = state.store.get(response_id)
    if stored is None:
        raise ApiError(404, f"No response found with id '{response_id}'.", "response_id", "not_found")
    return stored.response


def delete_response(response_id: str, state: ServerState) -> dict[str, Any]:
    if not state.store.delete(response_id):
        raise ApiError(404, f"No response found with id '{response_id}'.", "response_id", "not_found")
    return {"id": response_id, "object": "response", "deleted": True}
