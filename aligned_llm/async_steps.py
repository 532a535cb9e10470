"""Advance a blocking iterator from async code, one step at a time on a worker thread.

The engine locks each model forward (never a whole generation), so the steps of one
generation may run on any thread; only one step runs at a time because each is awaited
before the next starts. A cancelled await sets the generation's cancel flag and waits for the
step in flight — also under anyio, whose cancel scopes cancel every later await again — so the
iterator is never touched by two threads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


async def next_in_thread(iterator: Iterator[T], cancel: threading.Event) -> T | None:
    """The next item of ``iterator`` computed on a worker thread, or ``None`` at its end."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    step = loop.run_in_executor(None, context.run, next, iterator, _END)
    try:
        item = await asyncio.shield(step)
    except asyncio.CancelledError:
        cancel.set()
        while not step.done():  # anyio cancel scopes re-deliver the cancellation at every await
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([step])
        raise
    return None if item is _END else item  # type: ignore[return-value]
