"""The engine before continuous batching, kept to compare against: each call decodes its own batch on its own thread.

Concurrent calls interleave their forwards under each model's lock, so N of them cost about N
forwards per step. ``PerCallLLM`` is an ``AlignedLLM`` that runs every submission this way;
``benchmarks/concurrency.py`` measures both in one run.
"""

from __future__ import annotations

import threading

from aligned_llm import AlignedLLM
from aligned_llm.engine import Engine
from aligned_llm.generation import Ticket
from aligned_llm.scheduler import Submission


class PerCallRunner:
    """Each submission decodes its own fixed batch (``Engine.run``) on its own thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._threads: dict[threading.Thread, Ticket] = {}

    def submit(self, submission: Submission, *, start_thread: bool = True) -> None:
        """Decode ``submission`` on a thread of its own (always: the per-call engine has no caller-driven loop)."""
        thread = threading.Thread(target=self._run, args=(submission,), name="aligned-llm-call", daemon=True)
        self._threads[thread] = submission.ticket
        thread.start()

    def drive(self, ticket: Ticket) -> None:
        """Nothing to drive: each submission has its own thread."""

    def join(self, timeout: float | None = None) -> None:
        for thread in list(self._threads):
            thread.join(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Cancel every submission not yet finished and wait for their threads."""
        for ticket in list(self._threads.values()):
            ticket.cancel.set()
        self.join(timeout)

    @property
    def running(self) -> bool:
        return bool(self._threads)

    def _run(self, submission: Submission) -> None:
        ticket = submission.ticket
        try:
            events = self.engine.run(
                submission.requests,
                submission.method,
                submission.sampling,
                trace=submission.trace,
                cancel=ticket.cancel,
            )
            for event in events:
                ticket.deliver([event])
        except Exception as error:
            ticket.fail(error)
        finally:
            self._threads.pop(threading.current_thread(), None)


class PerCallLLM(AlignedLLM):
    """An ``AlignedLLM`` whose calls each decode as their own batch (no continuous batching)."""

    def _make_runner(self) -> PerCallRunner:  # type: ignore[override]
        return PerCallRunner(self._engine)
