"""Continuous batching: one running batch per ``AlignedLLM`` that requests join and leave at step boundaries.

A background thread (started when work arrives, gone when there is none) loops:

1. **admit** waiting requests, first come first served, while the running batch stays within
   the :class:`BatchBudget` (rows at once, KV cache slots); a request that does not fit waits,
   and none behind it jumps the queue;
2. **reap** cancelled requests (waiting, prefilling or running): they end ``"cancelled"``
   and their rows leave the caches;
3. **decode** one step of the running batch: one forward per model for every row of every
   request, whatever its method, then each group's score → choose → record → drop;
4. **prefill** one chunk (``engine.PREFILL_CHUNK`` positions) of the admitted requests, so the
   running batch keeps stepping while they prefill; once prefilled they choose their first
   token and their caches are merged into the running ones (left-padded to align). Requests
   admitted together are prefilled in cohorts of at most ``PREFILL_TOKENS`` padded prompt
   tokens, one after the other, so the first of a burst start decoding before the last are
   prefilled and the running batch never waits for one huge prefill forward.

Each request's tokens equal decoding it alone: rows only share forwards, never state, and
padding is masked out. ``PerCallRunner`` is the engine before continuous batching (each
submission decodes its own batch on its own thread, forwards interleaved under the model's
lock), kept to compare against.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

from aligned_llm.engine import Batch, Cohort, Engine, EngineRequest, Group, Sampling
from aligned_llm.errors import InvalidSettingError, PromptTooLongError
from aligned_llm.generation import Ticket
from aligned_llm.methods.base import DecodingMethod

PREFILL_TOKENS = 512
"""Padded prompt tokens (rows × longest prompt) of the requests prefilled together; one request is never split."""

_LIVE: weakref.WeakSet[Scheduler | PerCallRunner] = weakref.WeakSet()
"""Runners whose threads may be decoding: stopped at interpreter exit, so no thread dies inside a forward."""


@atexit.register
def _stop_live_runners() -> None:
    for runner in list(_LIVE):
        runner.stop(timeout=5.0)


@dataclass(frozen=True)
class BatchBudget:
    """What the running batch may hold at once: ``max_rows`` rows (all models), ``max_kv_tokens`` KV slots.

    The caches are left-padded to their longest row, so a batch's KV slots are its rows times
    its longest row. A request is admitted only if, with it, rows × the longest
    (prompt + ``max_new_tokens``) of every admitted request stays within ``max_kv_tokens``:
    rows only leave until the next admission, so the caches never outgrow the budget.
    """

    max_rows: int = 64
    max_kv_tokens: int = 65536

    def __post_init__(self) -> None:
        for name in ("max_rows", "max_kv_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                label = "max_batch_rows" if name == "max_rows" else name
                raise InvalidSettingError(label, f"must be a positive integer, got {value!r}")

    def fits(self, rows: int, span: int) -> bool:
        """Whether ``rows`` rows whose longest needs ``span`` positions fit."""
        return rows <= self.max_rows and rows * span <= self.max_kv_tokens

    def check(self, where: str, request: EngineRequest) -> None:
        """Refuse a request that could never fit, even in an empty batch."""
        rows = len(request.row_ids)
        if rows > self.max_rows:
            raise InvalidSettingError(
                "method",
                f"needs {rows} rows per prompt but this AlignedLLM runs at most max_batch_rows={self.max_rows}",
            )
        if not self.fits(rows, span(request)):
            raise PromptTooLongError(
                where,
                f"needs {rows} rows × {span(request)} positions (prompt + max_new_tokens) = "
                f"{rows * span(request)} KV slots, but this AlignedLLM's max_kv_tokens is {self.max_kv_tokens}: "
                "shorten the prompt, lower max_new_tokens or raise max_kv_tokens",
            )


def span(request: EngineRequest) -> int:
    """Cache positions the request's longest row may reach: its prompt plus every token it may generate."""
    return max(len(ids) for ids in request.row_ids) + request.max_new_tokens


@dataclass(frozen=True, eq=False)
class Submission:
    """Checked requests of one call, and where their events go."""

    ticket: Ticket
    requests: Sequence[EngineRequest]
    method: DecodingMethod
    sampling: Sampling
    trace: bool


@dataclass(frozen=True, eq=False)
class _Waiting:
    submission: Submission
    index: int

    @property
    def request(self) -> EngineRequest:
        return self.submission.requests[self.index]


class Scheduler:
    """The running batch of one engine and the thread that steps it."""

    def __init__(self, engine: Engine, budget: BatchBudget) -> None:
        self.engine = engine
        self.budget = budget
        self._lock = threading.Lock()
        self._waiting: deque[_Waiting] = deque()
        self._thread: threading.Thread | None = None
        self._batch: Batch | None = None
        self._cohorts: deque[Cohort] = deque()
        """Admitted requests still prefilling, in arrival order; the first advances one chunk per turn."""
        self._tickets: weakref.WeakSet[Ticket] = weakref.WeakSet()

    def submit(self, submission: Submission) -> None:
        """Queue every request of ``submission``; they join the running batch as the budget allows."""
        with self._lock:
            self._tickets.add(submission.ticket)
            self._waiting.extend(_Waiting(submission, index) for index in range(len(submission.requests)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="aligned-llm-batch", daemon=True)
                self._thread.start()
                _LIVE.add(self)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the thread has stopped (it stops when no work is left)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Cancel every submission not yet finished and wait for the thread to stop."""
        with self._lock:
            tickets = list(self._tickets)
        for ticket in tickets:
            ticket.cancel.set()
        self.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the batch thread is alive (it runs only while there is work)."""
        return self._thread is not None

    def _loop(self) -> None:
        try:
            while True:
                self._reap()
                self._admit()
                if self._batch is None and not self._cohorts:
                    with self._lock:
                        if not self._waiting:
                            self._thread = None
                            return
                    continue
                if self._batch is not None:
                    self._decode()
                    self._reap()
                if self._cohorts:
                    self._prefill()
        except BaseException as error:  # a caller must never wait for a thread that is gone
            self._fail_everything(error)
            raise

    # --- admission --------------------------------------------------------------------------

    def _admit(self) -> None:
        """Start prefilling the waiting requests that fit, in arrival order; none while a prefill is under way."""
        if self._cohorts or (self._batch is not None and not self._batch.mergeable):
            return
        admitted = [item for group in (self._batch.groups if self._batch else []) for item in group.items]
        rows = sum(len(item.request.row_ids) for item in admitted)
        longest = max((span(item.request) for item in admitted), default=0)
        taken: list[_Waiting] = []
        with self._lock:
            while self._waiting:
                head = self._waiting[0]
                with_head = max(longest, span(head.request))
                if not self.budget.fits(rows + len(head.request.row_ids), with_head):
                    break
                taken.append(self._waiting.popleft())
                rows, longest = rows + len(head.request.row_ids), with_head
            unfit = self._waiting.popleft() if not taken and not admitted and self._waiting else None
        if unfit is not None:  # AlignedLLM checks this before submitting; others learn it here
            try:
                self.budget.check("prompt", unfit.request)
            except InvalidSettingError as error:
                unfit.submission.ticket.fail(error)
        for part in _prefill_parts(taken):
            groups = [
                self.engine.group(
                    [(waiting.index, waiting.request) for waiting in run],
                    submission.method,
                    submission.sampling,
                    submission.trace,
                    owner=submission.ticket,
                )
                for submission, run in ((s, list(r)) for s, r in groupby(part, key=lambda waiting: waiting.submission))
            ]
            self._cohorts.append(Cohort(self.engine, groups))

    # --- cancellation -----------------------------------------------------------------------

    def _reap(self) -> None:
        """End cancelled requests wherever they are; drop the rows of failed submissions."""
        with self._lock:
            stopped = [waiting for waiting in self._waiting if _stopped(waiting.submission.ticket)]
            for waiting in stopped:
                self._waiting.remove(waiting)
        for submission, run in groupby(stopped, key=lambda waiting: waiting.submission):
            group = self.engine.group(
                [(waiting.index, waiting.request) for waiting in run],
                submission.method,
                submission.sampling,
                submission.trace,
            )
            submission.ticket.deliver(self.engine.cancel(group))
        for holder in (self._batch, *self._cohorts):
            if holder is None:
                continue
            survivors: dict[Group, list[int]] = {}
            for group in holder.groups:
                ticket: Ticket = group.owner
                if _stopped(ticket):
                    ticket.deliver(self.engine.cancel(group))
                    survivors[group] = []
            if survivors:
                holder.keep(survivors)
        if self._batch is not None and not self._batch.groups:
            self._batch = None
        self._cohorts = deque(cohort for cohort in self._cohorts if cohort.groups)

    # --- stepping ---------------------------------------------------------------------------

    def _decode(self) -> None:
        assert self._batch is not None
        try:
            logits = self._batch.forward()
        except Exception as error:
            self._fail(self._batch.groups, error)
            self._batch = None
            return
        self._decide(self._batch, logits)
        if not self._batch.groups:
            self._batch = None

    def _prefill(self) -> None:
        cohort = self._cohorts[0]
        try:
            cohort.advance()
            if not cohort.done:
                return
            joining, logits = cohort.finish()
        except Exception as error:
            self._fail(cohort.groups, error)
            self._cohorts.popleft()
            return
        self._cohorts.popleft()
        self._decide(joining, logits)
        if not joining.groups:
            return
        if self._batch is None:
            self._batch = joining
        else:
            self._batch.extend(joining)

    def _decide(self, batch: Batch, logits: list) -> None:
        """Each group's step on its logits; finished requests (and groups that failed) leave ``batch``."""
        survivors: dict[Group, list[int]] = {}
        for group, group_logits in zip(list(batch.groups), logits, strict=True):
            ticket: Ticket = group.owner
            try:
                events, finished = self.engine.decide(group, group_logits)
            except Exception as error:
                ticket.fail(error)
                survivors[group] = []
                continue
            ticket.deliver(events)
            if finished:
                survivors[group] = self.engine._drop(group, finished)
        if survivors:
            batch.keep(survivors)

    # --- failures ---------------------------------------------------------------------------

    @staticmethod
    def _fail(groups: list[Group], error: BaseException) -> None:
        for group in groups:
            group.owner.fail(error)

    def _fail_everything(self, error: BaseException) -> None:
        with self._lock:
            waiting, self._waiting = list(self._waiting), deque()
            self._thread = None
        for holder in (self._batch, *self._cohorts):
            if holder is not None:
                self._fail(holder.groups, error)
        self._batch, self._cohorts = None, deque()
        for item in waiting:
            item.submission.ticket.fail(error)


def _stopped(ticket: Ticket) -> bool:
    return ticket.cancel.is_set() or ticket.closed


def _prefill_parts(taken: list[_Waiting]) -> list[list[_Waiting]]:
    """Consecutive runs of ``taken`` whose padded prompts (rows × longest) stay within ``PREFILL_TOKENS``."""
    parts: list[list[_Waiting]] = []
    rows = longest = 0
    for waiting in taken:
        request_rows = len(waiting.request.row_ids)
        request_longest = max(len(ids) for ids in waiting.request.row_ids)
        grown = (rows + request_rows) * max(longest, request_longest)
        if parts and grown <= PREFILL_TOKENS:
            parts[-1].append(waiting)
            rows, longest = rows + request_rows, max(longest, request_longest)
        else:
            parts.append([waiting])
            rows, longest = request_rows, request_longest
    return parts


class PerCallRunner:
    """The engine before continuous batching: each submission decodes its own fixed batch on its own thread.

    Concurrent submissions interleave their forwards under each model's lock, so N of them
    cost about N forwards per step. Kept so that benchmarks measure both in one run.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._threads: dict[threading.Thread, Ticket] = {}

    def submit(self, submission: Submission) -> None:
        thread = threading.Thread(target=self._run, args=(submission,), name="aligned-llm-call", daemon=True)
        self._threads[thread] = submission.ticket
        _LIVE.add(self)
        thread.start()

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
