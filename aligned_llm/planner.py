"""The scheduler's planner: a pure function from the queue, the running set and the budget to a step's plan.

Like vLLM's ``schedule()``, it decides and the engine executes; it never sees a model, a cache or a
thread, so admission is tested on plain numbers. Each loop of the scheduler asks it once:

1. **drop** every cancelled request, waiting or running;
2. **admit** waiting requests first come first served while the running batch, with them,
   stays within the :class:`BatchBudget`; a request that does not fit waits and none behind it
   jumps the queue; none is admitted while an earlier admission is still prefilling or while
   the running caches cannot take rows;
3. **refuse** the head of the queue if it could not fit even in an empty batch;
4. split the admitted into **cohorts** of at most ``PREFILL_TOKENS`` padded prompt tokens
   (one request is never split), prefilled one after the other;
5. **decode** one step if anything runs, and **prefill** one chunk if a cohort is waiting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aligned_llm.errors import InvalidSettingError, PromptTooLongError

PREFILL_TOKENS = 512
"""Padded prompt tokens (rows × longest prompt) of the requests prefilled together; one request is never split."""


@dataclass(frozen=True)
class BatchBudget:
    """What the running batch may hold at once: ``max_rows`` rows (all models), ``max_kv_tokens`` KV slots.

    The caches hold each row up to the batch's longest row (left padding, or a slot per row in
    the static store), so a batch's KV slots are its rows times its longest span. A request is
    admitted only if, with it, rows × the longest (prompt + ``max_new_tokens``) of every
    admitted request stays within ``max_kv_tokens``: rows only leave until the next admission,
    so the caches never outgrow the budget.
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

    def check(self, where: str, shape: RequestShape) -> None:
        """Refuse a request that could never fit, even in an empty batch."""
        if shape.rows > self.max_rows:
            raise InvalidSettingError(
                "method",
                f"needs {shape.rows} rows per prompt but this AlignedLLM runs at most max_batch_rows={self.max_rows}",
            )
        if not self.fits(shape.rows, shape.span):
            slots = shape.rows * shape.span
            raise PromptTooLongError(
                where,
                f"needs {shape.rows} rows × {shape.span} positions (prompt + max_new_tokens) = {slots} KV slots, "
                f"but this AlignedLLM's max_kv_tokens is {self.max_kv_tokens}: "
                "shorten the prompt, lower max_new_tokens or raise max_kv_tokens",
            )


@dataclass(frozen=True)
class RequestShape:
    """What the planner knows of a request: its rows, its longest prompt, its span, and whether it was cancelled."""

    rows: int
    longest_prompt: int
    max_new_tokens: int
    cancelled: bool = False

    @property
    def span(self) -> int:
        """Cache positions its longest row may reach: prompt plus every token it may generate."""
        return self.longest_prompt + self.max_new_tokens


@dataclass(frozen=True)
class StepPlan:
    """One loop's decisions; indices refer to the sequences the planner was given."""

    drop_waiting: tuple[int, ...] = ()
    drop_running: tuple[int, ...] = ()
    cohorts: tuple[tuple[int, ...], ...] = ()
    """Waiting requests admitted now, as consecutive cohorts to prefill (in queue order)."""
    refuse: int | None = None
    """A waiting request that can never fit, even alone: it fails with the budget's error."""
    decode: bool = False
    prefill: bool = False

    @property
    def admitted(self) -> tuple[int, ...]:
        return tuple(index for cohort in self.cohorts for index in cohort)

    @property
    def idle(self) -> bool:
        """Nothing to do: nothing runs, prefills, was refused or is to be dropped."""
        return not (self.decode or self.prefill or self.refuse is not None or self.drop_waiting or self.drop_running)


def plan_step(
    waiting: Sequence[RequestShape],
    running: Sequence[RequestShape],
    budget: BatchBudget,
    *,
    prefilling: int = 0,
    mergeable: bool = True,
) -> StepPlan:
    """The next step's plan.

    ``running`` are the requests in the running batch, ``prefilling`` how many cohorts are still
    prefilling, ``mergeable`` whether the running caches can take rows.
    """
    drop_waiting = tuple(index for index, shape in enumerate(waiting) if shape.cancelled)
    drop_running = tuple(index for index, shape in enumerate(running) if shape.cancelled)
    queue = [index for index, shape in enumerate(waiting) if not shape.cancelled]
    kept = [shape for shape in running if not shape.cancelled]
    taken: list[int] = []
    refuse = None
    if not prefilling and mergeable:
        rows = sum(shape.rows for shape in kept)
        longest = max((shape.span for shape in kept), default=0)
        for index in queue:
            head = waiting[index]
            with_head = max(longest, head.span)
            if not budget.fits(rows + head.rows, with_head):
                break
            taken.append(index)
            rows, longest = rows + head.rows, with_head
        if not taken and not kept and queue:
            refuse = queue[0]
    cohorts = _cohorts([(index, waiting[index]) for index in taken])
    return StepPlan(
        drop_waiting=drop_waiting,
        drop_running=drop_running,
        cohorts=cohorts,
        refuse=refuse,
        decode=bool(kept),
        prefill=bool(prefilling or cohorts),
    )


def _cohorts(taken: list[tuple[int, RequestShape]]) -> tuple[tuple[int, ...], ...]:
    """Consecutive runs of ``taken`` whose padded prompts (rows × longest) stay within ``PREFILL_TOKENS``."""
    parts: list[list[int]] = []
    rows = longest = 0
    for index, shape in taken:
        grown = (rows + shape.rows) * max(longest, shape.longest_prompt)
        if parts and grown <= PREFILL_TOKENS:
            parts[-1].append(index)
            rows, longest = rows + shape.rows, max(longest, shape.longest_prompt)
        else:
            parts.append([index])
            rows, longest = shape.rows, shape.longest_prompt
    return tuple(tuple(part) for part in parts)
