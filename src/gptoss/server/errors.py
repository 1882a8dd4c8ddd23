"""OpenAI-style errors: every failure is `{"error": {"message", "type", "param", "code"}}` with the right status.

Routes raise `ApiError`; the handlers installed here also turn unknown routes, wrong methods, pydantic validation
errors and unexpected exceptions into the same shape, so no client ever gets an HTML page or a bare 500.
"""

from __future__ import annotations

import logging
from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger("gptoss.server")

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        kind = ERROR_TYPES.get(self.status, "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param, code)


_ABSENT = object()


def child(node: object, part: int | str) -> object:
    if isinstance(node, dict):
        return node.get(part, _ABSENT)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return _ABSENT


def data_path(loc: tuple[int | str, ...], body: object) -> list[int | str]:
    """The part of a pydantic error location that exists in the request body: union-member labels such as
    'str' or a discriminator's tag are not keys of the data, so they are left out."""
    path: list[int | str] = []
    node = body
    for part in loc:
        found = child(node, part)
        if found is not _ABSENT:
            node = found
            path.append(part)
        elif part == loc[-1] and isinstance(node, dict) and isinstance(part, str) and "[" not in part:
            path.append(part)  # a missing field: it is named although the body lacks it
    return path


def param_name(path: list[int | str]) -> str | None:
    """['messages', 0, 'content'] -> 'messages[0].content'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def from_validation(errors: list[Any], body: object) -> ApiError:
    """The most specific pydantic error (deepest in the body), worded like OpenAI's."""
    paths = [data_path(tuple(e.get("loc", ())), body) for e in errors]
    depth = max(len(p) for p in paths)
    first, path = next((e, p) for e, p in zip(errors, paths, strict=True) if len(p) == depth)
    param = param_name(path)
    kind, msg = first.get("type", ""), str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "missing":
        return bad_request(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if kind == "extra_forbidden":
        return bad_request(f"Unrecognized request argument supplied: {param}", param, "unknown_parameter")
    return bad_request(f"Invalid value for '{param}': {msg}.", param, "invalid_value")


def validation_error(e: pydantic.ValidationError, body: object) -> ApiError:
    return from_validation(list(e.errors()), body)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = {404: "Not found: no such route", 405: "Method not allowed on this route"}.get(
        exc.status_code, str(exc.detail)
    )
    return ApiError(exc.status_code, message, code={404: "not_found"}.get(exc.status_code)).response()


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return from_validation(list(exc.errors()), exc.body).response()


async def _client_gone(request: Request, _: Exception) -> JSONResponse:
    """The client left before its request was read (e.g. mid-upload): nobody will see an answer, so this is a
    disconnect, not a server error: logged at debug, counted as 499 (nginx's 'client closed request')."""
    log.debug("client left during %s %s before its request was read", request.method, request.url.path)
    return ApiError(
        499, "The client closed the connection before the request was read.", code="client_closed"
    ).response()


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return ApiError(500, "The server had an error while processing your request.", code="server_error").response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
