"""What a caller holds while its generation decodes: a :class:`Generation` or a :class:`GenerationStream`.

The engine decodes on its own thread and delivers each submission's events to a
:class:`Ticket`; callers wait on the ticket from any thread (blocking) or any event loop
(``await``, woken by ``call_soon_threadsafe``), so no thread is spent per waiting caller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from typing import Any

from aligned_llm.engine import StepEvent
from aligned_llm.result import GenerationResult, StreamDelta

Results = GenerationResult | list[GenerationResult]


class Ticket:
    """One submission's channel from the engine to its callers: events in order, then the results or an error.

    ``future`` resolves to the list of results (one per prompt) or, for a single prompt
    submitted as such, to its result. Events are kept for a reader only with ``keep_events``;
    ``transform`` rewrites them first (tool calls and structured answers are read out of the text).
    """

    def __init__(
        self,
        count: int,
        cancel: threading.Event,
        *,
        is_batch: bool,
        keep_events: bool,
        transform: Callable[[Iterable[StepEvent]], Iterable[StepEvent]] | None = None,
    ) -> None:
        self.cancel = cancel
        self.is_batch = is_batch
        self._transform = transform
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.future.set_running_or_notify_cancel()
        self._results: list[GenerationResult | None] = [None] * count
        self._remaining = count
        self._keep_events = keep_events
        self._events: deque[StepEvent] = deque()
        self._error: BaseException | None = None
        self._closed = False
        self._condition = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def closed(self) -> bool:
        """Whether every result (or an error) has arrived; later events are ignored."""
        return self._closed

    def deliver(self, events: Iterable[StepEvent]) -> None:
        """Take the engine's events for this submission (called on the engine's thread)."""
        with self._condition:
            if self._closed:
                return
            if self._transform is not None:
                events = self._transform(events)
            for event in events:
                if self._keep_events:
                    self._events.append(event)
                if event.result is not None:
                    self._results[event.index] = event.result
                    self._remaining -= 1
            self._closed = self._remaining == 0
            self._wake()
        if self._closed:
            results = list(self._results)
            self.future.set_result(results if self.is_batch else results[0])

    def fail(self, error: BaseException) -> None:
        """End the submission with ``error``: its readers and its future raise it."""
        with self._condition:
            if self._closed:
                return
            self._closed = True
            self._error = error
            self._wake()
        self.future.set_exception(error)

    def _wake(self) -> None:
        self._condition.notify_all()
        waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            with contextlib.suppress(RuntimeError):  # the waiter's loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_resolve, waiter)

    def next_event(self) -> StepEvent | None:
        """The next event, blocking until there is one; ``None`` at the end; the engine's error if it failed."""
        with self._condition:
            self._condition.wait_for(lambda: self._events or self._closed)
            return self._pop()

    async def anext_event(self) -> StepEvent | None:
        """:meth:`next_event` for async code: waits without blocking the event loop or using a thread."""
        loop = asyncio.get_running_loop()
        while True:
            with self._condition:
                if self._events or self._closed:
                    return self._pop()
                waiter = loop.create_future()
                self._waiters.append((loop, waiter))
            await waiter

    def _pop(self) -> StepEvent | None:
        if self._events:
            return self._events.popleft()
        if self._error is not None:
            raise self._error
        return None


class FollowUp:
    """Where a follow-up of request ``index`` of a ticket delivers: the same ticket, under that index.

    A second part of an answer (the prose after a decision to answer, see ``answer.plan``)
    decodes as a submission of its own; its events reach the first part's ticket and reader.
    """

    def __init__(self, ticket: Ticket, index: int) -> None:
        self.ticket = ticket
        self.index = index

    @property
    def cancel(self) -> threading.Event:
        return self.ticket.cancel

    @property
    def closed(self) -> bool:
        return self.ticket.closed

    def deliver(self, events: Iterable[StepEvent]) -> None:
        """Pass the follow-up's events on under the request's index."""
        self.ticket.deliver([dataclasses.replace(event, index=self.index) for event in events])

    def fail(self, error: BaseException) -> None:
        self.ticket.fail(error)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Generation:
    """A submitted generation, decoding in the engine's running batch (see ``AlignedLLM.submit``).

    Wait for it with :meth:`result` (blocking) or ``await generation``; stop it with
    :meth:`cancel` (its requests end at their next step, ``finish_reason="cancelled"``).
    ``future`` is a ``concurrent.futures.Future`` of the same outcome, for
    ``concurrent.futures.wait``/``as_completed`` and ``asyncio.wrap_future``.
    """

    def __init__(self, ticket: Ticket) -> None:
        self._ticket = ticket

    @property
    def future(self) -> concurrent.futures.Future[Any]:
        return self._ticket.future

    def result(self, timeout: float | None = None) -> Results:
        """The results (a list for a list of prompts), blocking until decoding ends; the engine's error if it failed.

        Interrupted (``KeyboardInterrupt``, a timeout), it cancels nothing: call :meth:`cancel`.
        """
        return self._ticket.future.result(timeout)

    def done(self) -> bool:
        return self._ticket.future.done()

    def cancel(self) -> None:
        """Stop decoding at the next step; the results that come say ``"cancelled"``."""
        self._ticket.cancel.set()

    def __await__(self) -> Generator[Any, None, Results]:
        return self._wait().__await__()

    async def _wait(self) -> Results:
        """Await the results; a cancelled await cancels the generation and waits until it has left the batch."""
        waiting = asyncio.wrap_future(self._ticket.future)
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            self.cancel()
            with contextlib.suppress(BaseException):
                await waiting
            raise


class GenerationStream(Iterator[str], AsyncIterator[str]):
    """Text deltas of one generation; ``.result`` holds the outcome after the last delta.

    The generation is submitted on the first step of iteration and then decodes in the
    engine's running batch whether or not the stream is read; reading collects what is
    decided. Iterate with ``for`` (blocking) or ``async for`` (the event loop keeps running);
    :meth:`cancel` stops it at the next step, :meth:`close` abandons it (and so does dropping
    the stream).
    """

    def __init__(self, start: Callable[[], Ticket], cancel: threading.Event) -> None:
        self.result: GenerationResult | None = None
        self.generated_tokens = 0
        self._start = start
        self._ticket: Ticket | None = None
        self._cancel = cancel
        self._closed = False
        weakref.finalize(self, cancel.set)

    def _started(self) -> Ticket:
        if self._ticket is None:
            self._ticket = self._start()
        return self._ticket

    def _take(self, event: StepEvent) -> StreamDelta | None:
        self.generated_tokens = event.generated_tokens
        if event.result is not None:
            self.result = event.result
        if event.delta or event.tool_calls:
            return StreamDelta(event.delta, event.tool_calls)
        return None

    def __next__(self) -> str:
        while (delta := self._next_delta()) is not None:
            if delta.text:
                return delta.text
        raise StopIteration

    def deltas(self) -> Iterator[StreamDelta]:
        """Prose text and tool-call pieces as they are decided (use instead of iterating the text)."""
        while (delta := self._next_delta()) is not None:
            yield delta

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> str:
        while (delta := await self._anext_delta()) is not None:
            if delta.text:
                return delta.text
        raise StopAsyncIteration

    async def adeltas(self) -> AsyncIterator[StreamDelta]:
        """:meth:`deltas` for ``async for``."""
        while (delta := await self._anext_delta()) is not None:
            yield delta

    def _next_delta(self) -> StreamDelta | None:
        """The next event that carries text or tool-call pieces, or ``None`` at the end."""
        if self._closed:
            return None
        ticket = self._started()
        while (event := ticket.next_event()) is not None:
            if (delta := self._take(event)) is not None:
                return delta
        return None

    async def _anext_delta(self) -> StreamDelta | None:
        if self._closed:
            return None
        ticket = self._started()
        try:
            while (event := await ticket.anext_event()) is not None:
                if (delta := self._take(event)) is not None:
                    return delta
        except asyncio.CancelledError:
            self._cancel.set()
            raise
        return None

    def cancel(self) -> None:
        """Stop this generation at the next step."""
        self._cancel.set()

    def close(self) -> None:
        """Abandon the generation: it stops at the next step and the stream yields nothing more."""
        self._closed = True
        if self.result is None:
            self._cancel.set()

    async def aclose(self) -> None:
        """:meth:`close`, for ``async`` code."""
        self.close()
