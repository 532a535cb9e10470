"""Route a LangChain ``batch()`` into engine batches, keeping LangChain's per-input runs, callbacks and errors.

``batch()`` announces the calls it is about to make (a :class:`BatchPlan` in a context
variable, which LangChain's executors copy into their worker threads), then runs LangChain's
own batch. The first worker to reach the model for a group of announced calls with the same
model and settings decodes the whole group (up to ``max_batch_size``) as one engine batch;
the others of the group collect their results. Nothing waits on a timer or on other inputs
arriving. A call that was not announced (or whose group failed, e.g. one prompt too long)
is decoded alone, so each input still gets its own result or its own error.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from aligned_llm import GenerationResult

from langchain_aligned_llm.core_call import CoreCall

Conversation = list[dict[str, str]]


@dataclass(eq=False)
class _Slot:
    """One announced call: taken by its caller, claimed by whichever caller decodes it."""

    conversation: Conversation
    done: threading.Event = field(default_factory=threading.Event)
    result: GenerationResult | None = None
    taken: bool = False
    claimed: bool = False


class BatchPlan:
    """The calls one ``batch()`` will make, grouped by model and settings."""

    def __init__(self, max_batch_size: int) -> None:
        self._max_batch_size = max_batch_size
        self._groups: dict[tuple[int, str], list[_Slot]] = {}
        self._lock = threading.Lock()

    def expect(self, call: CoreCall, conversation: Conversation) -> None:
        """Announce a call the batch will make."""
        with self._lock:
            self._groups.setdefault(call.key, []).append(_Slot(conversation))

    def result(self, call: CoreCall, conversation: Conversation) -> GenerationResult | None:
        """This call's result, decoded in an engine batch with its group; ``None`` if the caller must decode alone."""
        with self._lock:
            group = self._groups.get(call.key, [])
            mine = next((s for s in group if not s.taken and s.conversation == conversation), None)
            if mine is None:
                return None
            mine.taken = True
            batch: list[_Slot] = []
            if not mine.claimed:
                others = [s for s in group if not s.claimed and s is not mine]
                batch = [mine, *others[: self._max_batch_size - 1]]
                for slot in batch:
                    slot.claimed = True
        if batch:
            self._decode(call, batch)
        mine.done.wait()
        return mine.result

    @staticmethod
    def _decode(call: CoreCall, batch: list[_Slot]) -> None:
        try:
            try:
                results: list[GenerationResult | None] = list(
                    call.llm.generate([slot.conversation for slot in batch], **call.settings)
                )
            except Exception:
                # the group failed (e.g. one prompt is too long): each caller decodes alone, getting its own error
                results = [None] * len(batch)
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
        finally:
            for slot in batch:
                slot.done.set()


_active_plan: ContextVar[BatchPlan | None] = ContextVar("langchain_aligned_llm_batch_plan", default=None)


def planned_result(call: CoreCall, conversation: Conversation) -> GenerationResult | None:
    """The result from the running ``batch()``'s plan, if this call was announced there."""
    plan = _active_plan.get()
    return plan.result(call, conversation) if plan is not None else None


@contextmanager
def batch_plan(plan: BatchPlan | None) -> Iterator[None]:
    """Make ``plan`` visible to the calls made inside (and to the worker threads LangChain starts)."""
    token = _active_plan.set(plan)
    try:
        yield
    finally:
        _active_plan.reset(token)
