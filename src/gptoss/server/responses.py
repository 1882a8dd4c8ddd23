"""POST/GET/DELETE /v1/responses: request -> PromptSpec, output events -> Responses items and SSE events.

`ResponseRun` is the one builder of a response: it turns output events into the streaming events (with sequence
numbers) and keeps the response object up to date, so a non-streaming response is exactly the `response.completed`
payload a streaming client would get.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from gptoss.engine import Finish, Generation, TokenEvent
from gptoss.harmony import Conversation, ReasoningEffort, Role
from gptoss.harmony.constraint import TurnConstraint
from gptoss.sampling import SamplingParams
from gptoss.server import conversation as conv
from gptoss.server.builtin import builtin_kind, call_message, declared_names, requested_tools
from gptoss.server.conversation import ItemKind, OutputItem, OutputParser, Problem
from gptoss.server.errors import ApiError, bad_request
from gptoss.server.generation import (
    check_fits,
    check_model,
    constraint,
    context_length,
    harmony,
    logprob_entry,
    new_id,
    now,
    reasoning_budget,
    sampling,
    stop_tokens,
    submit,
)
from gptoss.server.input_items import listed_items
from gptoss.server.protocol import (
    FunctionCallInput,
    FunctionCallOutputInput,
    FunctionToolSpec,
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
from gptoss.tools import BuiltinTools, ToolStep, split_pending

EFFORTS = {
    "minimal": ReasoningEffort.LOW,
    "low": ReasoningEffort.LOW,
    "medium": ReasoningEffort.MEDIUM,
    "high": ReasoningEffort.HIGH,
}
ITEM_PREFIX = {ItemKind.REASONING: "rs", ItemKind.MESSAGE: "msg", ItemKind.FUNCTION_CALL: "fc"}
log = logging.getLogger("gptoss.server")
CALL_TYPES = {"browser": "web_search_call", "python": "code_interpreter_call"}
_closing: set[asyncio.Task[None]] = set()  # tool shutdowns scheduled from synchronous code

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
        return conv.ResponseFormat(fmt.name, fmt.schema_, fmt.description, bool(fmt.strict))
    if isinstance(fmt, JsonObjectFormat):
        return conv.ResponseFormat("json_object", {"type": "object"}, "Respond with one JSON object.")
    return None


def effort_of(req: ResponsesRequest, default: str) -> ReasoningEffort:
    chosen = req.reasoning.effort if req.reasoning is not None else None
    return EFFORTS[chosen or default]


def prompt_spec(
    req: ResponsesRequest,
    items: list[conv.Item],
    instructions: str | None,
    state: ServerState,
    builtin: BuiltinTools | None = None,
) -> conv.PromptSpec:
    functions = [t for t in req.tools or [] if isinstance(t, FunctionToolSpec)]
    # Responses function tools are strict unless the request says otherwise (OpenAI's default)
    tools = tuple(
        conv.FunctionTool(t.name, t.description or "", t.parameters, t.strict is not False) for t in functions
    )
    return conv.PromptSpec(
        items=tuple(items),
        instructions=instructions,
        tools=tools,
        tool_choice=tool_choice(req),
        effort=effort_of(req, state.config.default_effort),
        response_format=response_format(req),
        date=state.config.today(),
        items_param="input",
        format_param="text.format.schema",
        builtin=tuple(builtin.namespaces()) if builtin is not None else (),
    )


def top_logprobs_of(req: ResponsesRequest) -> int | None:
    """Alternatives per answer token, when `top_logprobs` or `include: ["message.output_text.logprobs"]` asks."""
    if req.top_logprobs is not None:
        return req.top_logprobs
    return 0 if "message.output_text.logprobs" in (req.include or []) else None


def conversation_id(req: ResponsesRequest) -> str | None:
    ref = req.conversation
    return ref if isinstance(ref, str) or ref is None else ref.id


def previous(req: ResponsesRequest, state: ServerState) -> Stored | None:
    """The stored response this one continues: `previous_response_id`, or the newest of its `conversation` (a
    conversation is the chain of its stored responses; an id never seen before starts one)."""
    conversation = conversation_id(req)
    if conversation is not None:
        if req.previous_response_id is not None:
            raise bad_request("Give either previous_response_id or conversation, not both.", "conversation")
        latest = state.store.latest_in_conversation(conversation)
        return None if latest is None else state.store.get(latest)
    if req.previous_response_id is None:
        return None
    stored = state.store.get(req.previous_response_id)
    if stored is None:
        raise bad_request(
            f"Previous response with id '{req.previous_response_id}' not found.", "previous_response_id", "not_found"
        )
    return stored


# ---- output -> response object and events ----


def output_item(
    kind: ItemKind,
    item_id: str,
    call_id: str | None,
    item: OutputItem,
    status: str,
    annotations: Sequence[dict[str, Any]] = (),
    text: str | None = None,
) -> dict[str, Any]:
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
    shown = item.text if text is None else text
    content = [text_part(shown, annotations)] if status != "in_progress" else []
    phase = "commentary" if item.channel == "commentary" else "final_answer"
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content, "phase": phase}


def call_item(tool: str, item_id: str, status: str, item: OutputItem | None = None) -> dict[str, Any]:
    """A built-in tool call as a Responses output item (`web_search_call` / `code_interpreter_call`)."""
    if tool == "browser":
        return {"id": item_id, "type": "web_search_call", "status": status, "action": None}
    code = item.text if item is not None else ""
    body = {"id": item_id, "type": "code_interpreter_call", "status": status, "code": code, "outputs": None}
    return {**body, "container_id": "sandbox"}


def text_part(
    text: str, annotations: Sequence[dict[str, Any]] = (), logprobs: Sequence[dict[str, Any]] = ()
) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": list(annotations), "logprobs": list(logprobs)}


def part_of(
    item: OutputItem,
    annotations: Sequence[dict[str, Any]] = (),
    text: str | None = None,
    logprobs: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    if item.kind is ItemKind.REASONING:
        return {"type": "reasoning_text", "text": item.text}
    return text_part(item.text if text is None else text, annotations, logprobs)


def problem_dicts(problems: list[Problem]) -> list[dict[str, str]]:
    return [{"kind": p.kind, "detail": p.detail, "text": p.text} for p in problems]


def extension(state: ServerState, problems: list[Problem], stopped: dict[str, Any] | None = None) -> dict[str, Any]:
    """What gptoss reports beyond OpenAI's fields, under one `gptoss` key (clients that follow OpenAI's types ignore
    it): the repairs of malformed model output (also logged and counted in /metrics) and why the tool loop stopped."""
    state.count_problems(problems)
    if problems:
        log.warning("repaired model output: %s", "; ".join(f"{p.kind}: {p.detail}" for p in problems))
    ext: dict[str, Any] = {"repairs": problem_dicts(problems)} if problems else {}
    if stopped is not None and "code" not in stopped:
        ext["stopped"] = dict(stopped)
    return {"gptoss": ext} if ext else {}


def repair_header(ext: dict[str, Any]) -> dict[str, str]:
    """`x-gptoss-repairs: N` on a non-streaming answer whose model output needed N repairs."""
    repairs = ext.get("gptoss", {}).get("repairs", [])
    return {"x-gptoss-repairs": str(len(repairs))} if repairs else {}


def outcome(
    generation: Generation, stopped: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
    """(status, incomplete_details, error), in OpenAI's vocabulary only. `stopped` is why the tool loop ended the
    response early: out of budget (incomplete, max_output_tokens), out of tool calls (completed: OpenAI ignores
    calls past max_tool_calls), or an error (failed)."""
    if generation.finish is Finish.ERROR:
        return "failed", None, {"code": "server_error", "message": f"generation failed: {generation.error}"}
    if stopped is not None and "code" in stopped:
        return "failed", None, stopped
    if generation.finish is Finish.CANCELLED:
        return "cancelled", None, None
    if generation.finish is Finish.LENGTH or (stopped is not None and stopped["reason"] == "max_output_tokens"):
        return "incomplete", {"reason": "max_output_tokens"}, None
    return "completed", None, None


class ResponseRun:
    """Builds one response: feed output events, get Responses streaming events; `response` is always current.

    Built-in tool calls (`tools`) become `web_search_call` / `code_interpreter_call` items: they stay in progress
    until `tool_done` (or `abandon`). With a browser, final-answer citations are turned into links as the text
    streams, with url_citation annotations when the message is done."""

    def __init__(self, response: dict[str, Any], tools: BuiltinTools | None = None, logprobs: bool = False) -> None:
        self.response = response
        self.tools = tools
        self.logprobs = logprobs  # top_logprobs was asked for: answer text carries per-token logprobs
        self.token_logprobs: dict[int, list[dict[str, Any]]] = {}  # message index -> its tokens' logprobs
        self.sequence = 0
        self.item_ids: list[str] = []
        self.call_ids: list[str | None] = []
        self.kinds: list[str | None] = []  # "browser" / "python" for built-in tool calls
        self.items: list[OutputItem] = []
        self.raw: dict[int, str] = {}  # message text as generated (citations not yet resolved)
        self.shown: dict[int, str] = {}  # message text streamed so far (citations resolved)
        self.pending: set[int] = set()  # built-in calls whose tool has not run yet
        self.steps: dict[int, ToolStep] = {}  # built-in calls that ran

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
            return self.delta(out.index, out.text, out.event)
        return self.done(out.index, out.item)

    def citing(self, index: int) -> bool:
        """Whether this item's text gets citations resolved (a message, with a browser enabled)."""
        return (
            self.tools is not None
            and self.tools.browser is not None
            and self.kinds[index] is None
            and (self.items[index].kind is ItemKind.MESSAGE)
        )

    def started(self, index: int, item: OutputItem) -> list[dict[str, Any]]:
        tool = builtin_kind(self.tools, item)
        prefix = {"browser": "ws", "python": "ci"}.get(tool or "", ITEM_PREFIX[item.kind])
        item_id = new_id(prefix)
        call_id = new_id("call") if item.kind is ItemKind.FUNCTION_CALL and tool is None else None
        self.item_ids.append(item_id)
        self.call_ids.append(call_id)
        self.kinds.append(tool)
        self.items.append(item)
        if tool is not None:
            body = call_item(tool, item_id, "in_progress")
            self.response["output"].append(body)
            return [
                self.event("response.output_item.added", output_index=index, item=dict(body)),
                self.event(f"response.{CALL_TYPES[tool]}.in_progress", output_index=index, item_id=item_id),
            ]
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

    def delta(self, index: int, text: str, token: TokenEvent | None = None) -> list[dict[str, Any]]:
        body, item_id = self.response["output"][index], self.item_ids[index]
        where = {"item_id": item_id, "output_index": index}
        if body["type"] == "web_search_call":
            return []
        if body["type"] == "code_interpreter_call":
            body["code"] += text
            return [self.event("response.code_interpreter_call_code.delta", **where, delta=text)]
        if body["type"] == "function_call":
            return [self.event("response.function_call_arguments.delta", **where, delta=text)]
        if body["type"] == "reasoning":
            return [self.event("response.reasoning_text.delta", **where, content_index=0, delta=text)]
        logprobs = [logprob_entry(token)] if self.logprobs and token is not None else []
        self.token_logprobs.setdefault(index, []).extend(logprobs)
        if self.citing(index):
            text = self.cited_delta(index, text)
            if not text:
                return []
        return [self.event("response.output_text.delta", **where, content_index=0, delta=text, logprobs=logprobs)]

    def cited_delta(self, index: int, text: str) -> str:
        """The new text to stream once citations are resolved; an unfinished citation is held back."""
        assert self.tools is not None
        raw = self.raw.get(index, "") + text
        self.raw[index] = raw
        safe, _ = split_pending(raw)
        cited, _ = self.tools.cite(safe)
        shown = self.shown.get(index, "")
        if not cited.startswith(shown):
            return ""  # cannot happen with well-formed citations; the done event carries the whole text
        self.shown[index] = cited
        return cited[len(shown) :]

    def done(self, index: int, item: OutputItem) -> list[dict[str, Any]]:
        tool = self.kinds[index]
        if tool is not None:
            return self.call_done(index, item, tool)
        status = "incomplete" if item.truncated else "completed"
        where = {"item_id": self.item_ids[index], "output_index": index}
        if self.citing(index):
            return self.message_done(index, item, status, where)
        body = output_item(item.kind, self.item_ids[index], self.call_ids[index], item, status)
        logprobs = self.token_logprobs.get(index, [])
        if item.kind is ItemKind.MESSAGE:
            body["content"][0]["logprobs"] = logprobs
        self.response["output"][index] = body
        if item.kind is ItemKind.FUNCTION_CALL:
            events = [self.event("response.function_call_arguments.done", **where, name=item.name, arguments=item.text)]
        else:
            kind = "response.reasoning_text.done" if item.kind is ItemKind.REASONING else "response.output_text.done"
            extra: dict[str, Any] = {} if item.kind is ItemKind.REASONING else {"logprobs": logprobs}
            events = [
                self.event(kind, **where, content_index=0, text=item.text, **extra),
                self.event(
                    "response.content_part.done", **where, content_index=0, part=part_of(item, logprobs=logprobs)
                ),
            ]
        return [*events, self.event("response.output_item.done", output_index=index, item=body)]

    def message_done(self, index: int, item: OutputItem, status: str, where: dict[str, Any]) -> list[dict[str, Any]]:
        assert self.tools is not None
        text, citations = self.tools.cite(item.text)
        annotations = [c.to_dict() for c in citations]
        shown = self.shown.get(index, "")
        events = []
        if text.startswith(shown) and len(text) > len(shown):
            rest = text[len(shown) :]
            events.append(self.event("response.output_text.delta", **where, content_index=0, delta=rest, logprobs=[]))
        for i, annotation in enumerate(annotations):
            events.append(
                self.event(
                    "response.output_text.annotation.added",
                    **where,
                    content_index=0,
                    annotation_index=i,
                    annotation=annotation,
                )
            )
        body = output_item(item.kind, self.item_ids[index], None, item, status, annotations, text)
        logprobs = self.token_logprobs.get(index, [])
        body["content"][0]["logprobs"] = logprobs
        self.response["output"][index] = body
        part = part_of(item, annotations, text, logprobs)
        events += [
            self.event("response.output_text.done", **where, content_index=0, text=text, logprobs=logprobs),
            self.event("response.content_part.done", **where, content_index=0, part=part),
            self.event("response.output_item.done", output_index=index, item=body),
        ]
        return events

    def call_done(self, index: int, item: OutputItem, tool: str) -> list[dict[str, Any]]:
        """The model finished writing a built-in call: announce that it runs (the tool runs after generation)."""
        where = {"output_index": index, "item_id": self.item_ids[index]}
        events = []
        if tool == "python":
            events.append(self.event("response.code_interpreter_call_code.done", **where, code=item.text))
        if item.truncated:
            return [*events, *self.abandon(index)]
        self.pending.add(index)
        body = self.response["output"][index]
        if tool == "python":
            body["status"] = "interpreting"
            return [*events, self.event("response.code_interpreter_call.interpreting", **where)]
        body["status"] = "searching"
        return [self.event("response.web_search_call.searching", **where)]

    def tool_done(self, index: int, step: ToolStep, opened: str | None = None) -> list[dict[str, Any]]:
        tool = self.kinds[index]
        assert tool is not None
        self.pending.discard(index)
        self.steps[index] = step
        body = call_item(tool, self.item_ids[index], "completed", self.items[index])
        if tool == "browser":
            action = step.action
            if action is not None and action["type"] == "open_page" and "url" not in action and opened is not None:
                action["url"] = opened
            body["action"] = action
        else:
            body["outputs"] = [{"type": "logs", "logs": step.output}]
        self.response["output"][index] = body
        where = {"output_index": index, "item_id": self.item_ids[index]}
        return [
            self.event(f"response.{CALL_TYPES[tool]}.completed", **where),
            self.event("response.output_item.done", output_index=index, item=body),
        ]

    def abandon(self, index: int) -> list[dict[str, Any]]:
        """A built-in call that will not run (cut off, not the last message, or out of tool rounds)."""
        tool = self.kinds[index]
        assert tool is not None
        self.pending.discard(index)
        body = call_item(tool, self.item_ids[index], "incomplete", self.items[index])
        self.response["output"][index] = body
        return [self.event("response.output_item.done", output_index=index, item=body)]

    def abandon_pending(self, keep: int | None = None) -> list[dict[str, Any]]:
        return [e for i in sorted(self.pending - {keep}) for e in self.abandon(i)]

    def history_items(self) -> list[conv.Item]:
        """The output as input items of a follow-up request; built-in calls that ran come with their replies."""
        history: list[conv.Item] = []
        for i, item in enumerate(self.items):
            step = self.steps.get(i)
            if self.kinds[i] is None:
                history += conv.output_to_history([item], [self.call_ids[i]])
            elif step is not None:
                call = call_message(item)
                history.append(conv.BuiltinCall(call.recipient or "", item.text, item.channel or "analysis"))
                history += [
                    conv.BuiltinOutput(
                        m.author.name or call.recipient or "",
                        conv.message_text(m),
                        m.channel or call.channel or "analysis",
                    )
                    for m in step.messages
                ]
        return history

    def finish(
        self,
        generation: Generation,
        usage: tuple[int, int, int, int],
        ext: dict[str, Any],
        stopped: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        status, details, error = outcome(generation, stopped)
        prompt_tokens, output_tokens, reasoning_tokens, cached_tokens = usage
        self.response.update(
            status=status,
            incomplete_details=details,
            error=error,
            completed_at=now() if status == "completed" else None,
            usage={
                "input_tokens": prompt_tokens,
                "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
                "total_tokens": prompt_tokens + output_tokens,
            },
            **ext,
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
        "top_logprobs": req.top_logprobs,
        "conversation": {"id": conversation_id(req)} if req.conversation is not None else None,
        "max_tool_calls": req.max_tool_calls,
        "prompt_cache_key": req.prompt_cache_key,
        "safety_identifier": req.safety_identifier,
        "truncation": "disabled",
        "usage": None,
        "user": req.user,
        "metadata": req.metadata or {},
    }


# ---- the handler ----


class Prepared:
    """A validated, submitted request and everything needed to answer it, including its built-in tool loop."""

    def __init__(self, req: ResponsesRequest, state: ServerState) -> None:
        check_model(req.model, state.config.model_name)
        stored = previous(req, state)
        history = [conv.item_from_dict(d) for d in stored.history] if stored is not None else []
        inherited = stored.response.get("instructions") if stored is not None else None
        self.instructions = req.instructions if req.instructions is not None else inherited
        self.items = history + input_items(req.input)
        self.req, self.state = req, state
        # `tool_choice: none` leaves the built-in tools out of the prompt and the loop, like function tools
        self.tools = requested_tools(req.tools or [], state.config) if req.tool_choice != "none" else None
        try:
            spec = prompt_spec(req, self.items, self.instructions, state, self.tools)
            try:
                prompt = conv.render_prompt(spec, harmony())
            except conv.ConversionError as e:
                raise bad_request(str(e), e.param) from None
            self.context = context_length(state.engine)
            check_fits(len(prompt.tokens), req.max_output_tokens, self.context, "max_output_tokens")
            self.declared = [t.name for t in spec.tools] + declared_names(self.tools)
            self.prompt, self.rules = prompt.tokens, prompt.rules
            self.parsers = [OutputParser(harmony(), self.declared)]
            self.top = top_logprobs_of(req)
            skeleton = response_skeleton(req, new_id("resp"), self.instructions, state)
            self.run = ResponseRun(skeleton, self.tools, self.top is not None)
            self.generation = submit(state.engine, prompt.tokens, self.params(0), self.top, self.constraint(0))
        except BaseException:
            self.close_tools_later()
            raise
        self.gone = False
        self.prompt_tokens = self.output_tokens = self.cached_tokens = 0  # summed over the tool loop's generations
        self.stopped: dict[str, Any] | None = None  # why the tool loop ended the response early
        self.ext: dict[str, Any] = {}  # the `gptoss` extension field, once concluded

    def params(self, used: int) -> SamplingParams:
        return sampling(self.req.temperature, self.req.top_p, None, self.output_left(used), stop_tokens())

    def output_left(self, used: int) -> int | None:
        return self.req.max_output_tokens - used if self.req.max_output_tokens is not None else None

    def constraint(self, used: int) -> TurnConstraint | None:
        """The grammar of this generation. tool_choice `required` / named binds the first generation only: after
        a built-in call ran, the model is free to answer (or call again)."""
        rules = self.rules if used == 0 else replace(self.rules, choice="auto", function=None)
        budget = reasoning_budget(
            self.req.max_reasoning_tokens, self.output_left(used), self.state.config.max_reasoning_tokens
        )
        return constraint(rules, budget)

    def close_tools_later(self) -> None:
        if self.tools is not None:
            task = asyncio.get_running_loop().create_task(self.tools.aclose())
            _closing.add(task)
            task.add_done_callback(_closing.discard)

    @property
    def problems(self) -> list[Problem]:
        return [p for parser in self.parsers for p in parser.problems]

    def client_left(self) -> None:
        self.gone = True
        self.generation.cancel()

    async def events(self) -> AsyncIterator[list[dict[str, Any]]]:
        """Generate, and while the model ends on a call to an enabled built-in tool, run it, append its messages
        and generate again (at most `max_tool_rounds` times); yields the Responses events as they happen."""
        rounds = 0
        try:
            while True:
                parser, offset = self.parsers[-1], len(self.run.response["output"])
                generated: list[int] = []
                async for event in self.generation:
                    generated.append(event.token)
                    for out in parser.feed(event):
                        yield self.run.feed(replace(out, index=out.index + offset))
                for out in parser.finish():
                    yield self.run.feed(replace(out, index=out.index + offset))
                self.prompt_tokens += self.generation.stats.prompt_tokens
                self.cached_tokens += self.generation.stats.cached_tokens
                self.output_tokens += self.generation.stats.output_tokens
                call = self.tool_call()
                yield self.run.abandon_pending(keep=call)
                if call is None:
                    break
                if self.gone:
                    yield self.run.abandon(call)
                    break
                if rounds >= self.tool_limit():
                    self.stopped = {
                        "reason": "max_tool_calls",
                        "message": f"the model made more than {self.tool_limit()} built-in tool calls "
                        f"({self.limit_source()}); the last one was not run",
                    }
                    yield self.run.abandon(call)
                    break
                rounds += 1
                assert self.tools is not None
                pages = len(self.tools.browser.stack) if self.tools.browser is not None else 0
                try:
                    step = await self.tools.run(call_message(self.run.items[call]))
                except Exception as e:  # the tools report their own failures as messages; this is a bug
                    log.exception("built-in tool call failed")
                    self.stopped = {"code": "server_error", "message": f"the built-in tool call failed: {e!r}"}
                    yield self.run.abandon(call)
                    break
                yield self.run.tool_done(call, step, self.opened_url(pages))
                if self.gone or not self.continue_after(generated, step):
                    break
        finally:
            self.generation.cancel()  # no-op when finished; frees the engine if the stream was abandoned
            if self.tools is not None:
                await self.tools.aclose()

    def tool_limit(self) -> int:
        """Built-in calls one response may run: the request's max_tool_calls, capped by --max-tool-rounds."""
        server = self.state.config.max_tool_rounds
        return server if self.req.max_tool_calls is None else min(self.req.max_tool_calls, server)

    def limit_source(self) -> str:
        if self.req.max_tool_calls is not None and self.req.max_tool_calls <= self.state.config.max_tool_rounds:
            return "the request's max_tool_calls"
        return "the server's limit, --max-tool-rounds"

    def opened_url(self, pages_before: int) -> str | None:
        """The URL of the page a browser call just pushed (open by link id names none in its arguments)."""
        browser = self.tools.browser if self.tools is not None else None
        if browser is None or len(browser.stack) <= pages_before:
            return None
        target = browser.citation_target(len(browser.stack) - 1)
        return target[0] if target is not None else None

    def tool_call(self) -> int | None:
        """The output index of the built-in call the last generation ended on, if it should run."""
        items = self.run.items
        last = len(items) - 1
        if last < 0 or last not in self.run.pending or self.generation.finish is not Finish.STOP:
            return None
        return last

    def continue_after(self, generated: list[int], step: ToolStep) -> bool:
        """Append the model's output and the tool's messages to the prompt and submit the next generation."""
        encoding = harmony()
        reply = encoding.render_conversation_for_completion(Conversation.from_messages(step.messages), Role.ASSISTANT)
        self.prompt = self.prompt + generated + reply
        used = self.output_tokens
        if self.req.max_output_tokens is not None and used >= self.req.max_output_tokens:
            self.stopped = {"reason": "max_output_tokens", "message": "the output budget ran out after a tool call"}
            return False
        if len(self.prompt) + 1 > self.context:
            self.stopped = {
                "reason": "max_output_tokens",
                "message": f"the conversation reached the model's context length ({self.context} tokens) after a "
                "tool call",
            }
            return False
        try:
            self.generation = submit(self.state.engine, self.prompt, self.params(used), self.top, self.constraint(used))
        except ApiError as e:
            self.stopped = {"code": e.code or "server_error", "message": f"could not continue after a tool call: {e}"}
            return False
        self.parsers.append(OutputParser(harmony(), self.declared))
        return True

    def conclude(self) -> dict[str, Any]:
        """The final event; stores the response when asked to (the default) and it was not cut off by the client."""
        reasoning = sum(parser.reasoning_tokens for parser in self.parsers)
        usage = (self.prompt_tokens, self.output_tokens, reasoning, self.cached_tokens)
        self.ext = extension(self.state, self.problems, self.stopped)
        final = self.run.finish(self.generation, usage, self.ext, self.stopped)
        response = self.run.response
        keep = self.generation.finish not in (Finish.ERROR, Finish.CANCELLED)
        if self.req.store is not False and keep:
            history = [conv.item_to_dict(i) for i in self.items + self.run.history_items()]
            inputs = listed_items(self.req.input)
            if not self.state.store.put(response["id"], response, history, inputs):
                response["store"] = False
        return final


async def create_response(req: ResponsesRequest, request: Request, state: ServerState) -> Response:
    prepared = Prepared(req, state)
    if req.stream:
        return sse_response(stream_response(prepared), state.config.keepalive_seconds, prepared.client_left)
    async with on_disconnect(request, prepared.client_left):
        async for _ in prepared.events():
            pass
    prepared.conclude()
    return JSONResponse(prepared.run.response, headers=repair_header(prepared.ext))


async def stream_response(prepared: Prepared) -> AsyncGenerator[bytes, None]:
    for event in prepared.run.start():
        yield frame(event, event["type"])
    async for events in prepared.events():
        for event in events:
            yield frame(event, event["type"])
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
