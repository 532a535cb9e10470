"""Continuous batching: one running batch per ``AlignedLLM`` that requests join and leave at step boundaries.

One thread at a time drives the loop: a blocking ``generate`` drives it on the caller's own thread
until its answer is complete (no thread hop, and its forwards run in the caller's OpenMP team), and
a background thread (started when work arrives and nobody drives, gone when there is none) drives
it otherwise, taking over what is left when a caller's answer is done. The loop asks the
planner (``aligned_llm.planner.plan_step``) what to do with the queue and the running batch,
then executes the plan on the engine — cancelled requests end ``"cancelled"`` and their rows
leave the caches; admitted requests start prefilling in cohorts; the running batch decodes
one step (one forward per model for every row of every request, whatever its method, then
each group's decisions); the first cohort prefills one chunk (``PREFILL_CHUNK`` positions),
so the running batch keeps stepping while newcomers prefill. Once prefilled, a cohort chooses
its first tokens and joins the running batch.

Each request's tokens equal decoding it alone: rows only share forwards, never state, and
padding is masked out.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby

from aligned_llm.engine.batch import Batch, Cohort
from aligned_llm.engine.engine import Engine
from aligned_llm.engine.requests import EngineRequest, Group, Progress, Sampling
from aligned_llm.errors import InvalidSettingError
from aligned_llm.generation import Ticket
from aligned_llm.methods.base import DecodingMethod
from aligned_llm.planner import BatchBudget, RequestShape, plan_step

_LIVE: weakref.WeakSet[Scheduler] = weakref.WeakSet()
"""Schedulers whose threads may be decoding: stopped at interpreter exit, so no thread dies inside a forward."""


@atexit.register
def _stop_live_runners() -> None:
    for runner in list(_LIVE):
        runner.stop(timeout=5.0)


def request_shape(request: EngineRequest, cancelled: bool = False) -> RequestShape:
    """What the planner needs to know of ``request``."""
    return RequestShape(
        rows=len(request.row_ids),
        longest_prompt=max(len(ids) for ids in request.row_ids),
        max_new_tokens=request.max_new_tokens,
        cancelled=cancelled,
    )


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
    """The running batch of one engine and the thread that executes the planner's steps."""

    def __init__(self, engine: Engine, budget: BatchBudget) -> None:
        self.engine = engine
        self.budget = budget
        self._lock = threading.Lock()
        self._waiting: deque[_Waiting] = deque()
        self._driver: threading.Thread | None = None
        """The thread running the loop (a caller's, or the background one); ``None`` when no work is left."""
        self._idle = threading.Event()
        self._idle.set()
        self._batch: Batch = engine.empty_batch()
        self._cohorts: deque[Cohort] = deque()
        """Admitted requests still prefilling, in arrival order; the first advances one chunk per turn."""
        self._tickets: weakref.WeakSet[Ticket] = weakref.WeakSet()

    def submit(self, submission: Submission, *, start_thread: bool = True) -> None:
        """Queue every request of ``submission``; they join the running batch as the budget allows.

        ``start_thread=False``: the caller drives the loop itself next (:meth:`drive`).
        """
        with self._lock:
            self._tickets.add(submission.ticket)
            self._waiting.extend(_Waiting(submission, index) for index in range(len(submission.requests)))
            if self._driver is None and start_thread:
                self._start_thread()

    def drive(self, ticket: Ticket) -> None:
        """Run the loop on the calling thread until ``ticket`` is closed, unless a thread drives it already.

        Work left when the ticket closes (other callers') goes on on a background thread.
        """
        with self._lock:
            if self._driver is not None:
                return
            self._driver = threading.current_thread()
            self._idle.clear()
            _LIVE.add(self)
        self._loop(until=lambda: ticket.closed)

    def _start_thread(self) -> None:
        """Start the background driver (the lock is held)."""
        self._driver = threading.Thread(target=self._loop, name="aligned-llm-batch", daemon=True)
        self._idle.clear()
        _LIVE.add(self)
        self._driver.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait until no thread drives the loop (it stops when no work is left)."""
        self._idle.wait(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Cancel every submission not yet finished and wait for the thread to stop."""
        with self._lock:
            tickets = list(self._tickets)
        for ticket in tickets:
            ticket.cancel.set()
        self.join(timeout)

    @property
    def running(self) -> bool:
        """Whether a thread drives the loop (one does only while there is work)."""
        return self._driver is not None

    def _loop(self, until: Callable[[], bool] | None = None) -> None:
        """Plan and execute steps until no work is left, or until ``until()`` (a caller driving for its answer)."""
        try:
            while True:
                with self._lock:
                    if until is not None and until():
                        self._hand_over()
                        return
                    waiting = list(self._waiting)
                    running = self._running_items()
                    plan = plan_step(
                        [request_shape(item.request, _stopped(item.submission.ticket)) for item in waiting],
                        [request_shape(item.request, _stopped(group.owner)) for group, item in running],
                        self.budget,
                        prefilling=len(self._cohorts),
                        mergeable=self._batch.mergeable,
                    )
                    if plan.idle and not self._cohorts:
                        self._driver = None
                        self._idle.set()
                        return
                    for index in (*plan.drop_waiting, *plan.admitted, *(() if plan.refuse is None else (plan.refuse,))):
                        self._waiting.remove(waiting[index])
                self._drop(waiting, plan.drop_waiting)
                self._reap()
                if plan.refuse is not None:
                    self._refuse(waiting[plan.refuse])
                for cohort in plan.cohorts:
                    self._cohorts.append(self._cohort([waiting[index] for index in cohort]))
                if plan.decode and self._batch.groups:
                    self._decode()
                    self._reap()
                if self._cohorts:
                    self._prefill()
        except BaseException as error:  # a caller must never wait for a thread that is gone
            self._fail_everything(error)
            raise

    def _hand_over(self) -> None:
        """A caller's answer is done: the background thread takes what is left (the lock is held)."""
        work_left = self._waiting or self._batch.groups or self._cohorts
        self._driver = None
        if work_left:
            self._start_thread()
        else:
            self._idle.set()

    def _running_items(self) -> list[tuple[Group, Progress]]:
        return [(group, item) for group in self._batch.groups for item in group.items]

    # --- executing the plan -----------------------------------------------------------------

    def _cohort(self, taken: list[_Waiting]) -> Cohort:
        """The admitted requests as a cohort to prefill: one group per run of one submission."""
        groups = [
            self.engine.group(
                [(waiting.index, waiting.request) for waiting in run],
                submission.method,
                submission.sampling,
                submission.trace,
                owner=submission.ticket,
            )
            for submission, run in ((s, list(r)) for s, r in groupby(taken, key=lambda waiting: waiting.submission))
        ]
        return Cohort(self.engine, groups)

    def _refuse(self, unfit: _Waiting) -> None:
        """AlignedLLM checks this before submitting; other submitters learn it here."""
        try:
            self.budget.check("prompt", request_shape(unfit.request))
        except InvalidSettingError as error:
            unfit.submission.ticket.fail(error)

    def _drop(self, waiting: list[_Waiting], indices: Sequence[int]) -> None:
        """End cancelled requests that had not started: their final events go to their tickets."""
        stopped = [waiting[index] for index in indices]
        for submission, run in groupby(stopped, key=lambda item: item.submission):
            group = self.engine.group(
                [(item.index, item.request) for item in run], submission.method, submission.sampling, submission.trace
            )
            submission.ticket.deliver(self.engine.cancel(group))

    def _reap(self) -> None:
        """End the cancelled requests that are prefilling or running; their rows leave the caches."""
        for holder in (self._batch, *self._cohorts):
            survivors: dict[Group, list[int]] = {}
            for group in holder.groups:
                ticket: Ticket = group.owner
                if _stopped(ticket):
                    ticket.deliver(self.engine.cancel(group))
                    survivors[group] = []
            if survivors:
                holder.keep(survivors)
        self._cohorts = deque(cohort for cohort in self._cohorts if cohort.groups)

    def _decode(self) -> None:
        try:
            logits = self._batch.forward()
        except Exception as error:
            self._fail(self._batch.groups, error)
            self._batch.keep({group: [] for group in self._batch.groups})
            return
        self._decide(self._batch, logits)

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
        if joining.groups:
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
                survivors[group] = group.surviving(finished)
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
            self._driver = None
            self._idle.set()
        for holder in (self._batch, *self._cohorts):
            self._fail(holder.groups, error)
        self._batch, self._cohorts = self.engine.empty_batch(), deque()
        for item in waiting:
            item.submission.ticket.fail(error)


def _stopped(ticket: Ticket) -> bool:
    return ticket.cancel.is_set() or ticket.closed
