"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` with the right HTTP status.

OpenAI clients turn these into their own exceptions (``BadRequestError``,
``AuthenticationError``, ``NotFoundError``, …) and show ``message``; ``param`` names the
request field at fault, so a client can tell which of its settings was refused.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aligned_llm.errors import InvalidSettingError, PromptTooLongError
from aligned_llm.schema_limits import MAX_SCHEMA_DEPTH
from aligned_llm.server.schemas import ErrorDetail, ErrorResponse

logger = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a request whose client went away (recorded in metrics; nobody receives it)."""


class APIError(Exception):
    """An error to answer with: status, OpenAI error fields, and extra headers (``Retry-After``, …)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = ErrorDetail(message=message, type=type, param=param, code=code)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body, also sent as the ``error`` event of a stream that fails midway."""
        return ErrorResponse(error=self.detail).model_dump()

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(param: str | None, message: str, code: str | None = None) -> APIError:
    """400: ``message`` should start with the parameter's name, as the core's errors do."""
    return APIError(400, message, param=param, code=code)


def from_setting_error(error: InvalidSettingError, rename: dict[str, str]) -> APIError:
    """A core ``InvalidSettingError`` as a 400, its parameter named as the request named it.

    ``rename`` maps core names to request names (``max_new_tokens`` → ``max_tokens``,
    ``prompt`` → ``messages``); an indexed name (``prompt[1].role``) keeps its index.
    """
    parameter = error.parameter
    head, bracket, rest = parameter.partition("[")
    param = rename.get(head, head) + bracket + rest
    message = str(error)
    if message.startswith(parameter + ":"):
        message = param + message[len(parameter) :]
    code = "context_length_exceeded" if isinstance(error, PromptTooLongError) else None
    return bad_request(param, message, code)


def unauthorized() -> APIError:
    return APIError(
        401, "a valid API key is required: send it as 'Authorization: Bearer <key>'", code="invalid_api_key"
    )


def model_not_found(requested: str, served: list[str]) -> APIError:
    return APIError(
        404,
        f"model: {requested!r} is not served here; this server serves {', '.join(map(repr, served))} "
        "(the model is fixed when the server starts)",
        param="model",
        code="model_not_found",
    )


def queue_full(limit: int, retry_after: int) -> APIError:
    return APIError(
        503,
        f"the server is at its limit of {limit} requests in flight; retry after {retry_after} s",
        type="server_error",
        code="queue_full",
        headers={"Retry-After": str(retry_after)},
    )


def _validation_error(_request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422 as OpenAI's 400: malformed JSON, or a field of the wrong type, named."""
    assert isinstance(error, RequestValidationError)
    first = error.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid" or (not location and _unparsable(first.get("input"))):
        reason = first.get("ctx", {}).get("error", first.get("msg"))
        return bad_request(None, f"the request body is not valid JSON: {reason}").response()
    param = ".".join(location) or None
    if param is None:
        return bad_request(None, f"the request body must be a JSON object: {first.get('msg')}").response()
    got = "" if first.get("type") == "missing" else f", got {_short_json(first.get('input'))}"
    return bad_request(param, f"{param}: {first.get('msg')}{got}").response()


def _short_json(value: object) -> str:
    """A value as the client sent it (JSON), cut to 80 characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _unparsable(body: object) -> bool:
    """Whether a body FastAPI left unparsed (sent without a JSON content type) is not JSON either."""
    if not isinstance(body, (bytes, str)):
        return False
    try:
        json.loads(body)
    except ValueError:
        return True
    return False


def _api_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, APIError)
    return error.response()


def _setting_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, InvalidSettingError)
    return from_setting_error(error, {}).response()


def _http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    if isinstance(error.__cause__, RecursionError):  # FastAPI's "error parsing the body", from json's recursion limit
        message = (
            "the request body nests deeper than the JSON parser reads; a schema in it may nest at most "
            f"{MAX_SCHEMA_DEPTH} objects/arrays (docs/usage.md: what a JSON schema may demand)"
        )
        return bad_request(None, message).response()
    code = "not_found" if error.status_code == 404 else None
    return APIError(error.status_code, str(error.detail), code=code, headers=error.headers).response()


class AnswerUnexpected:
    """ASGI middleware: an unexpected error becomes a 500 in OpenAI's shape, and goes no further.

    Starlette's own catch-all answers and then re-raises, and uvicorn closes the connection of a
    request that raised: the client's next request on that keep-alive connection then fails with
    "connection reset". Here the error is logged and answered, and the connection stays usable.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as error:
            if started:
                raise
            logger.exception("request failed", exc_info=error)
            answer = APIError(500, f"internal error: {type(error).__name__}: {error}", type="server_error")
            await answer.response()(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error the app can raise in OpenAI's shape."""
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InvalidSettingError, _setting_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_middleware(AnswerUnexpected)
