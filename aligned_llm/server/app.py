"""The OpenAI-compatible routes, on one ``AlignedLLM`` fixed when the app is built.

``create_app(llm)`` is the whole server: ``uvicorn`` runs it on one machine and each Ray Serve
replica runs its own. Decoding goes only through the core's public async API
(``agenerate``/``astream``), so concurrent requests share whatever batching the engine does.
Preparing a request (checking it, rendering and tokenising the prompt, compiling the grammar
of its tools or response format) runs in a worker thread, never on the event loop: ``/health``
and other requests are answered while a large schema compiles.
"""

from __future__ import annotations

import functools
import hmac
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from aligned_llm import AlignedLLM, GenerationResult, GenerationStream, InvalidSettingError
from aligned_llm.server.admission import Admission, AdmittedRequest
from aligned_llm.server.errors import (
    CLIENT_CLOSED_REQUEST,
    APIError,
    from_setting_error,
    install_error_handlers,
    model_not_found,
    unauthorized,
)
from aligned_llm.server.metrics import Metrics
from aligned_llm.server.options import DEFAULT_MAX_QUEUE, DEFAULT_RETRY_AFTER, check_app_options
from aligned_llm.server.responses import (
    ChatChunks,
    ClientGoneError,
    CompletionChunks,
    event_stream,
    unless_disconnected,
)
from aligned_llm.server.schemas import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList
from aligned_llm.server.translate import CoreCall, chat_call, chat_response, completion_call, completion_response

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def create_app(
    llm: AlignedLLM,
    *,
    served_model_name: str | Sequence[str] | None = None,
    api_key: str | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
    retry_after: int = DEFAULT_RETRY_AFTER,
) -> FastAPI:
    """An OpenAI-compatible app serving ``llm``.

    ``served_model_name``: the name(s) clients put in ``model`` (default ``llm.name``); any
    other name is a 404. ``api_key``: when set, ``/v1/*`` needs ``Authorization: Bearer <key>``
    (``/health`` and ``/metrics`` stay open, as in vLLM). ``max_queue``: requests in flight
    beyond which new ones get 503 with ``Retry-After: retry_after`` (seconds, >= 0). Every option is
    checked first (``server/options.py``): an empty ``api_key`` or name is refused, never ignored.
    """
    check_app_options(served_model_name=served_model_name, api_key=api_key, max_queue=max_queue,
                      retry_after=retry_after)  # fmt: skip
    names = [served_model_name] if isinstance(served_model_name, str) else list(served_model_name or [llm.name])
    primary = names[0]
    metrics = Metrics(max_queue)
    admission = Admission(max_queue, retry_after, metrics)
    created = int(time.time())
    card = ModelCard(id=primary, created=created, max_model_len=llm.context_window, methods=llm.available_methods())

    app = FastAPI(title="aligned-llm", summary="OpenAI-compatible server for decoding-time alignment")
    install_error_handlers(app)
    app.state.llm = llm
    app.state.metrics = metrics

    def authorised(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
            raise unauthorized()

    def check_model(requested: str | None) -> None:
        if requested is not None and requested not in names:
            raise model_not_found(requested, names)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": primary}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/models", dependencies=[Depends(authorised)])
    async def models() -> ModelList:
        return ModelList(data=[card.model_copy(update={"id": name}) for name in names])

    @app.get("/v1/models/{model:path}", dependencies=[Depends(authorised)])
    async def model(model: str) -> ModelCard:
        check_model(model)
        return card.model_copy(update={"id": model})

    async def prepared_stream(call: CoreCall) -> GenerationStream:
        """The core stream of ``call``, prepared (checked, rendered, its grammar compiled) in a worker thread."""
        return await run_in_threadpool(functools.partial(llm.astream, call.prompt, **call.settings))

    async def decode(
        endpoint: str,
        prepare: Callable[[], CoreCall],
        respond: Callable[[CoreCall, AdmittedRequest], Any],
    ) -> Any:
        """Translate, admit, decode and answer one request, recording its outcome."""
        try:
            call = prepare()
        except APIError as error:
            metrics.requests.labels(endpoint, str(error.status)).inc()
            raise
        ticket = admission.admit(endpoint)
        try:
            return await respond(call, ticket)
        except InvalidSettingError as error:
            ticket.finish(400)
            raise from_setting_error(error, call.rename) from None
        except ClientGoneError:
            ticket.disconnected()
            ticket.finish(CLIENT_CLOSED_REQUEST)
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        except APIError as error:
            ticket.finish(error.status)
            raise
        except BaseException:
            ticket.finish(500)
            raise

    @app.post(CHAT, dependencies=[Depends(authorised)])
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        def prepare() -> CoreCall:
            check_model(body.model)
            return chat_call(body)

        async def respond(call: CoreCall, ticket: AdmittedRequest) -> Any:
            if call.stream:
                stream = await prepared_stream(call)
                return event_stream(call, stream, ChatChunks(call, primary), ticket)
            result = await unless_disconnected(request, llm.agenerate(call.prompt, **call.settings))
            ticket.finish(200, call.method, [result])
            return JSONResponse(chat_response(call, primary, result).model_dump())

        return await decode(CHAT, prepare, respond)

    @app.post(COMPLETIONS, dependencies=[Depends(authorised)])
    async def completions(body: CompletionRequest, request: Request) -> Any:
        def prepare() -> CoreCall:
            check_model(body.model)
            return completion_call(body)

        async def respond(call: CoreCall, ticket: AdmittedRequest) -> Any:
            if call.stream:
                stream = await prepared_stream(call)
                return event_stream(call, stream, CompletionChunks(call, primary), ticket)
            outcome = await unless_disconnected(request, llm.agenerate(call.prompt, **call.settings))
            results: list[GenerationResult] = outcome if isinstance(outcome, list) else [outcome]
            ticket.finish(200, call.method, results)
            return JSONResponse(completion_response(call, primary, results).model_dump())

        return await decode(COMPLETIONS, prepare, respond)

    return app
