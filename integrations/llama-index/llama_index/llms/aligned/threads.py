"""Async access to the blocking core without blocking the event loop.

Decoding runs on the CPU/GPU inside the core's per-model lock, which belongs to the thread
that took it. A stream takes the lock on its first step and keeps it until it ends, so every
step of one stream (and its closing) must run on one and the same thread: each async stream
gets its own single-thread executor.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


async def iterate_in_thread(items: Generator[T, None, None]) -> AsyncGenerator[T, None]:
    """Yield the items of a blocking generator, each step computed on one worker thread."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="aligned-llm-stream") as worker:
        try:
            while True:
                item = await loop.run_in_executor(worker, next, items, _DONE)
                if item is _DONE:
                    return
                yield item  # type: ignore[misc]
        finally:
            await asyncio.shield(loop.run_in_executor(worker, items.close))
