"""GET /v1/responses/{id}/input_items: a stored response's own input items, as OpenAI lists them (ids, statuses,
content parts), paginated by item id (`after`, `limit` 1-100, `order` asc/desc with desc the default)."""

from __future__ import annotations

from typing import Any, Literal

from gptoss.server.errors import ApiError, bad_request
from gptoss.server.generation import new_id
from gptoss.server.protocol import FunctionCallInput, FunctionCallOutputInput, InputItem, MessageInput, ReasoningInput
from gptoss.server.state import ServerState


def listed_items(value: str | list[InputItem]) -> list[dict[str, Any]]:
    """The request's `input` as the items OpenAI's input_items endpoint returns (each with a fresh id)."""
    if isinstance(value, str):
        return [message("user", value)] if value else []
    return [listed(item) for item in value]


def message(role: str, text: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": []} if role == "assistant" else None
    content = [part or {"type": "input_text", "text": text}]
    return {"id": new_id("msg"), "type": "message", "role": role, "status": "completed", "content": content}


def listed(item: InputItem) -> dict[str, Any]:
    if isinstance(item, MessageInput):
        return message(item.role, item.content)
    if isinstance(item, ReasoningInput):
        parts = item.content if item.content is not None else item.summary
        content = [{"type": "reasoning_text", "text": "".join(p.text for p in parts)}]
        return {"id": new_id("rs"), "type": "reasoning", "summary": [], "content": content, "status": "completed"}
    if isinstance(item, FunctionCallInput):
        fields = {"call_id": item.call_id, "name": item.name, "arguments": item.arguments}
        return {"id": new_id("fc"), "type": "function_call", **fields, "status": "completed"}
    assert isinstance(item, FunctionCallOutputInput)
    fields = {"call_id": item.call_id, "output": item.output}
    return {"id": new_id("fco"), "type": "function_call_output", **fields, "status": "completed"}


def list_input_items(
    response_id: str, state: ServerState, after: str | None, limit: int, order: Literal["asc", "desc"]
) -> dict[str, Any]:
    items = state.store.input_items(response_id)
    if items is None:
        raise ApiError(404, f"No response found with id '{response_id}'.", "response_id", "not_found")
    if not 1 <= limit <= 100:
        raise bad_request(f"limit must be between 1 and 100, got {limit}.", "limit", "invalid_value")
    ordered = items if order == "asc" else items[::-1]
    start = 0
    if after is not None:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise bad_request(f"No input item with id '{after}' in response '{response_id}'.", "after", "not_found")
        start = ids.index(after) + 1
    page = ordered[start : start + limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": start + limit < len(ordered),
    }
