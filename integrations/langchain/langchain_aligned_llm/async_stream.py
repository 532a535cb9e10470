"""Async streaming through the default executor, with every step of a stream on one thread.

A core stream holds its model's lock from its first step to its last, and a lock belongs to
the thread that took it. LangChain's default ``_astream`` calls ``next`` on whichever
executor thread is free, which can release the lock from the wrong thread (an error, and a
model locked for good). Here one executor thread runs the whole iterator and hands the items
to the event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


async def iterate_in_thread(iterator: Iterator[T], cancel: Callable[[], None]) -> AsyncIterator[T]:
    """Yield ``iterator``'s items as one executor thread produces them.

    ``cancel`` is called when the consumer stops early, so the producer ends soon.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[object, BaseException | None]] = asyncio.Queue()

    def produce() -> None:
        try:
            for item in iterator:
                loop.call_soon_threadsafe(queue.put_nowait, (item, None))
        except BaseException as error:  # handed to the consumer, which raises it
            loop.call_soon_threadsafe(queue.put_nowait, (_END, error))
        else:
            loop.call_soon_threadsafe(queue.put_nowait, (_END, None))

    producer = loop.run_in_executor(None, contextvars.copy_context().run, produce)
    finished = False
    try:
        while True:
            item, error = await queue.get()
            if item is _END:
                finished = True
                if error is not None:
                    raise error
                return
            yield item  # type: ignore[misc]
    finally:
        if not finished:
            cancel()
        await producer
