"""The planner alone: admission, refusal, cohorts and drops decided on plain numbers, without a model."""

from __future__ import annotations

import pytest

from aligned_llm.errors import InvalidSettingError, PromptTooLongError
from aligned_llm.planner import PREFILL_TOKENS, BatchBudget, RequestShape, plan_step


def shape(rows: int = 1, prompt: int = 10, new: int = 10, cancelled: bool = False) -> RequestShape:
    return RequestShape(rows, prompt, new, cancelled)


def test_nothing_waiting_or_running_is_idle():
    plan = plan_step([], [], BatchBudget())
    assert plan.idle and not plan.decode and not plan.prefill


def test_waiting_requests_are_admitted_in_order_while_the_budget_holds():
    budget = BatchBudget(max_rows=4, max_kv_tokens=1000)
    waiting = [shape(rows=2, prompt=40, new=60), shape(rows=2, prompt=40, new=60), shape(rows=1)]
    plan = plan_step(waiting, [], budget)
    assert plan.admitted == (0, 1), "4 rows × 100 positions fit; a fifth row would not"
    assert plan.prefill and not plan.decode


def test_a_request_that_does_not_fit_blocks_the_ones_behind_it():
    budget = BatchBudget(max_rows=8, max_kv_tokens=500)
    running = [shape(rows=2, prompt=100, new=100)]
    waiting = [shape(rows=2, prompt=10, new=200), shape(rows=1, prompt=5, new=5)]
    plan = plan_step(waiting, running, budget)
    assert plan.admitted == (), "the head needs 4 × 210 > 500; nothing behind it jumps the queue"
    assert plan.decode and plan.refuse is None


def test_the_head_is_refused_only_when_it_could_never_fit():
    budget = BatchBudget(max_rows=2, max_kv_tokens=100)
    plan = plan_step([shape(rows=1, prompt=90, new=20), shape()], [], budget)
    assert plan.refuse == 0 and plan.admitted == ()
    with pytest.raises(PromptTooLongError):
        budget.check("prompt", shape(rows=1, prompt=90, new=20))
    with pytest.raises(InvalidSettingError) as raised:
        budget.check("prompt", shape(rows=3))
    assert raised.value.parameter == "method"


def test_nothing_is_admitted_while_a_cohort_prefills_or_the_caches_cannot_merge():
    waiting = [shape()]
    assert plan_step(waiting, [shape()], BatchBudget(), prefilling=1).admitted == ()
    assert plan_step(waiting, [shape()], BatchBudget(), mergeable=False).admitted == ()
    assert plan_step(waiting, [shape()], BatchBudget(), prefilling=1).prefill


def test_cancelled_requests_are_dropped_wherever_they_are():
    waiting = [shape(cancelled=True), shape()]
    running = [shape(), shape(cancelled=True)]
    plan = plan_step(waiting, running, BatchBudget())
    assert plan.drop_waiting == (0,) and plan.drop_running == (1,)
    assert plan.admitted == (1,) and plan.decode
    alone = plan_step([], [shape(cancelled=True)], BatchBudget())
    assert not alone.decode and not alone.idle, "the last running request is dropped before the thread may stop"


def test_admitted_requests_are_split_into_cohorts_of_bounded_padded_tokens():
    prompt = PREFILL_TOKENS // 4
    waiting = [shape(prompt=prompt) for _ in range(6)] + [shape(rows=2, prompt=PREFILL_TOKENS)]
    plan = plan_step(waiting, [], BatchBudget(max_rows=64, max_kv_tokens=10**6))
    assert plan.cohorts == ((0, 1, 2, 3), (4, 5), (6,)), "four prompts fill a cohort; one request is never split"
