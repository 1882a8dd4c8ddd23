"""create_app(engine, config) -> FastAPI: routes only. Each route reads and validates its body, then hands off to
the module for its API (responses, chat_completions, completions); none of them generates anything itself."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import pydantic
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from gptoss.engine import Engine
from gptoss.server import chat_completions, completions, responses, webchat
from gptoss.server.config import ServerConfig
from gptoss.server.errors import ApiError, bad_request, install_error_handlers, validation_error
from gptoss.server.inflight import CancelOnExit
from gptoss.server.input_items import list_input_items
from gptoss.server.metrics import Metrics, RequestCounter
from gptoss.server.protocol import ChatCompletionRequest, CompletionRequest, ResponsesRequest
from gptoss.server.state import ServerState
from gptoss.server.store import ResponseStore
from gptoss.server.unicode import check_strings, decode_body

Body = TypeVar("Body", bound=pydantic.BaseModel)
JSON_TYPES = ("application/json", "text/json")


def reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """The body as JSON: strictly UTF-8, and no lone surrogate in any string (400 naming where one is)."""
    text = decode_body(raw)
    try:
        data = json.loads(text, parse_constant=reject_constant)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise bad_request(f"The request body is not valid JSON: {str(e)[:200]}", code="invalid_json") from None
    check_strings(text, data)
    return data


async def read_body(request: Request, limit: int) -> bytes:
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind not in JSON_TYPES:
        raise ApiError(415, f"Content-Type must be application/json, got {kind!r}.", code="unsupported_media_type")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_request(request: Request, model: type[Body], limit: int) -> Body:
    data = parse_json(await read_body(request, limit))
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        raise validation_error(e, data) from None


def require_api_key(key: str | None) -> Callable[[Request], Awaitable[None]]:
    expected = None if key is None else key.encode()

    async def check(request: Request) -> None:
        if expected is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "Missing API key: send 'Authorization: Bearer KEY'.", code="invalid_api_key")
        if not hmac.compare_digest(token.strip().encode(), expected):
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    return check


def models_body(state: ServerState, created: int) -> dict[str, Any]:
    model = {"id": state.config.model_name, "object": "model", "created": created, "owned_by": "gptoss"}
    return {"object": "list", "data": [model]}


def api_routes(state: ServerState) -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key(state.config.api_key))])
    limit, created = state.config.max_body_bytes, int(time.time())

    @router.post("/v1/responses")
    async def post_response(request: Request) -> Response:
        body = await read_request(request, ResponsesRequest, limit)
        return await responses.create_response(body, request, state)

    @router.get("/v1/responses/{response_id}")
    async def get_response(response_id: str) -> JSONResponse:
        return JSONResponse(responses.get_response(response_id, state))

    @router.get("/v1/responses/{response_id}/input_items")
    async def get_input_items(
        response_id: str, after: str | None = None, limit: int = 20, order: Literal["asc", "desc"] = "desc"
    ) -> JSONResponse:
        return JSONResponse(list_input_items(response_id, state, after, limit, order))

    @router.delete("/v1/responses/{response_id}")
    async def delete_response(response_id: str) -> JSONResponse:
        return JSONResponse(responses.delete_response(response_id, state))

    @router.post("/v1/chat/completions")
    async def post_chat(request: Request) -> Response:
        body = await read_request(request, ChatCompletionRequest, limit)
        return await chat_completions.create_chat_completion(body, request, state)

    @router.post("/v1/completions")
    async def post_completion(request: Request) -> Response:
        body = await read_request(request, CompletionRequest, limit)
        return await completions.create_completion(body, request, state)

    @router.get("/v1/models")
    async def list_models() -> JSONResponse:
        return JSONResponse(models_body(state, created))

    @router.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> JSONResponse:
        if model_id != state.config.model_name:
            raise ApiError(404, f"The model '{model_id}' does not exist.", "model", "model_not_found")
        return JSONResponse(models_body(state, created)["data"][0])

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router


def create_app(engine: Engine, config: ServerConfig) -> FastAPI:
    """The HTTP app over an engine (which may still be loading: /health says 503 until it is ready)."""
    metrics = Metrics(engine)
    engine.on_finished = metrics.observe_generation
    state = ServerState(engine, config, ResponseStore(config.store_path, config.store_max_bytes), metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.store.close()

    app = FastAPI(title="gptoss", summary="OpenAI-compatible server for GPT-OSS", lifespan=lifespan)
    app.state.gptoss = state
    install_error_handlers(app)
    app.add_middleware(RequestCounter, metrics=metrics)
    app.add_middleware(CancelOnExit, inflight=state.inflight)

    @app.get("/health")
    async def health() -> JSONResponse:
        if not engine.ready:
            raise ApiError(503, "The model is still loading.", code="model_loading", headers={"Retry-After": "1"})
        return JSONResponse({"status": "ok", "model": config.model_name})

    @app.get("/", include_in_schema=False)
    async def web_chat() -> HTMLResponse:
        return HTMLResponse(webchat.page(config))  # public: the page asks for the API key itself

    app.include_router(api_routes(state))
    return app
