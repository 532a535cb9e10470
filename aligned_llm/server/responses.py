"""How a decoding request is answered: a JSON body, or server-sent events ending in ``[DONE]``.

Either way a client that disconnects cancels its generation: a stream's body is cancelled by
``sse-starlette`` when the connection drops (the core's async iterator then stops decoding at
its next step), and a JSON request races its generation against the ``http.disconnect``
message. The place in flight is freed and the outcome recorded in the metrics in every case.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, Protocol, TypeVar

from fastapi import Request
from pydantic import BaseModel
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

from aligned_llm import AlignedLLMError, GenerationResult, GenerationStream, StreamDelta, ToolCallDelta
from aligned_llm.server.admission import AdmittedRequest
from aligned_llm.server.errors import CLIENT_CLOSED_REQUEST, APIError
from aligned_llm.server.schemas import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatDelta,
    Completion,
    CompletionChoice,
    Usage,
)
from aligned_llm.server.translate import CoreCall, choice_extras, tool_call_deltas, usage

T = TypeVar("T")


class ClientGoneError(Exception):
    """The client disconnected before its answer was ready."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``await work``, cancelling it (and raising :class:`ClientGoneError`) if the client disconnects first.

    ``work`` runs as its own task, so it receives exactly one cancellation and finishes its
    step in flight before it stops (the handler's own cancel scope may cancel repeatedly).
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _pending = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task in done:
        return task.result()
    raise ClientGoneError


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _Deltas:
    """The text deltas of a core stream, read by a task of their own.

    The ASGI server cancels a response's task through an anyio cancel scope, which cancels
    again at every await; the core's async iterator must instead see one cancellation, so
    that it waits for the step in flight and closes the generation cleanly. Here the task
    that iterates the core stream is a plain asyncio task, cancelled once by :meth:`stop`.
    """

    def __init__(self, stream: GenerationStream) -> None:
        self.stream = stream
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            async for delta in self.stream.adeltas():
                self._queue.put_nowait(delta)
            self._queue.put_nowait(_END)
        except AlignedLLMError as error:
            self._queue.put_nowait(error)
        finally:
            self.stream.close()

    async def next(self) -> StreamDelta | None:
        """The next delta (text and tool-call pieces), ``None`` at the end; a decoding error is raised here."""
        item = await self._queue.get()
        if isinstance(item, AlignedLLMError):
            raise item
        return None if item is _END else item  # type: ignore[return-value]

    def stop(self) -> None:
        """Cancel the generation (it stops at its next step); does nothing once it has ended."""
        if not self._task.done():
            self.stream.cancel()
            self._task.cancel()


_END = object()


class ChunkFormat(Protocol):
    """The chunks of one endpoint's stream."""

    def start(self) -> BaseModel | None: ...

    def delta(self, text: str) -> BaseModel: ...

    def tool_calls(self, pieces: Sequence[ToolCallDelta]) -> BaseModel | None: ...

    def finish(self, result: GenerationResult) -> BaseModel: ...

    def usage(self, counts: Usage) -> BaseModel: ...


class ChatChunks:
    """``chat.completion.chunk`` objects: the role first, then content deltas, then the finish reason."""

    def __init__(self, call: CoreCall, model: str) -> None:
        self._call = call
        self._fields = {"id": f"chatcmpl-{call.id}", "created": call.created, "model": model}

    def _chunk(self, delta: ChatDelta, finish_reason: str | None = None, **extras: Any) -> ChatCompletionChunk:
        choice = ChatChunkChoice(index=0, delta=delta, finish_reason=finish_reason, **extras)
        return ChatCompletionChunk(choices=[choice], **self._fields)

    def start(self) -> BaseModel:
        return self._chunk(ChatDelta(role="assistant", content=""))

    def delta(self, text: str) -> BaseModel:
        return self._chunk(ChatDelta(content=text))

    def tool_calls(self, pieces: Sequence[ToolCallDelta]) -> BaseModel:
        return self._chunk(ChatDelta(tool_calls=tool_call_deltas(pieces)))

    def finish(self, result: GenerationResult) -> BaseModel:
        return self._chunk(ChatDelta(), result.finish_reason, **choice_extras(self._call, result))

    def usage(self, counts: Usage) -> BaseModel:
        return ChatCompletionChunk(choices=[], usage=counts, **self._fields)


class CompletionChunks:
    """``text_completion`` objects carrying text deltas, then the finish reason."""

    def __init__(self, call: CoreCall, model: str) -> None:
        self._call = call
        self._fields = {"id": f"cmpl-{call.id}", "created": call.created, "model": model}

    def _chunk(self, text: str, finish_reason: str | None = None, **extras: Any) -> Completion:
        choice = CompletionChoice(index=0, text=text, finish_reason=finish_reason, **extras)
        return Completion(choices=[choice], **self._fields)

    def start(self) -> None:
        return None

    def delta(self, text: str) -> BaseModel:
        return self._chunk(text)

    def tool_calls(self, pieces: Sequence[ToolCallDelta]) -> None:
        return None

    def finish(self, result: GenerationResult) -> BaseModel:
        return self._chunk("", result.finish_reason, **choice_extras(self._call, result))

    def usage(self, counts: Usage) -> BaseModel:
        return Completion(choices=[], usage=counts, **self._fields)


def event_stream(
    call: CoreCall, stream: GenerationStream, chunks: ChunkFormat, ticket: AdmittedRequest
) -> EventSourceResponse:
    """The SSE response of a streamed request; the client leaving cancels the generation."""

    async def client_left(_message: object) -> None:
        ticket.disconnected()

    async def never_started() -> None:
        """A client gone before the first event: the body never ran, so release its generation and place here."""
        if not ticket.finished:
            stream.cancel()
            stream.close()
            ticket.finish(CLIENT_CLOSED_REQUEST)

    return EventSourceResponse(
        _events(call, stream, chunks, ticket), sep="\n", client_close_handler_callable=client_left,
        background=BackgroundTask(never_started),
    )  # fmt: skip


async def _events(
    call: CoreCall, stream: GenerationStream, chunks: ChunkFormat, ticket: AdmittedRequest
) -> AsyncIterator[str]:
    status = CLIENT_CLOSED_REQUEST
    deltas = _Deltas(stream)

    def data(chunk: BaseModel) -> str:
        return chunk.model_dump_json(exclude=None if call.include_usage else {"usage"})

    try:
        start = chunks.start()
        if start is not None:
            yield data(start)
        while (delta := await deltas.next()) is not None:
            ticket.first_token()
            if delta.text:
                yield data(chunks.delta(delta.text))
            if delta.tool_calls and (pieces := chunks.tool_calls(delta.tool_calls)) is not None:
                yield data(pieces)
        result = stream.result
        assert result is not None
        yield data(chunks.finish(result))
        if call.include_usage:
            yield data(chunks.usage(usage([result])))
        status = 200
        yield "[DONE]"
    except AlignedLLMError as error:
        status = 500
        yield json.dumps(APIError(500, str(error), type="server_error").body())
        yield "[DONE]"
    finally:
        deltas.stop()
        results = [stream.result] if status == 200 and stream.result is not None else []
        ticket.finish(status, call.method, results, extra_tokens=0 if results else stream.generated_tokens)
