"""Continuous batching: concurrent requests share forwards, join and leave mid-flight, and each decodes as if alone."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import torch
from per_call import PerCallLLM

import aligned_llm.engine.kv.padded as prefill_module
import aligned_llm.planner as planner_module
from aligned_llm import (
    AlignedLLM,
    DecodingMethod,
    InvalidSettingError,
    NonFiniteLogitsError,
    PromptTooLongError,
    RowSpec,
    StepScores,
)
from tests.test_constraints import ONE_CALL, PROMPT, TOOLS, assert_valid_calls

LONG = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
SHORT = "What is 2 + 2?"
PRINCIPLE = "Always answer like a pirate."
PROFILE = {"helpful": 1.0, "humor": 0.5}

MIXED = [
    (LONG, {"max_new_tokens": 14}),
    (SHORT, {"method": "opad", "principle": PRINCIPLE, "max_new_tokens": 10}),
    ("Name three colours.", {"method": "linear", "principle": PRINCIPLE, "rho": 1.5, "max_new_tokens": 12}),
    (LONG, {"method": "pad", "profile": PROFILE, "k": 5, "max_new_tokens": 9}),
    ("Hi", {"method": "aad", "alpha": 0.2, "max_new_tokens": 11}),
    (SHORT, {"principle": PRINCIPLE, "temperature": 0.9, "top_p": 0.9, "seed": 5, "max_new_tokens": 10}),
    (
        "Tell me about the sea.",
        {"method": "opad", "principle": PRINCIPLE, "opad_window": 1, "stop": ["e"], "max_new_tokens": 16},
    ),
]
"""Prompts and settings of every built-in method, sampled and stopped ones included (on the tiny LoRA pair)."""


@dataclass
class Forwards:
    """Every forward of one model: (rows, positions fed) and the attention width, in call order.

    With ``hold_at``, the engine's thread waits in that decode forward (1-based) until released.
    """

    shapes: list[tuple[int, int]] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    hold_at: int | None = None
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def decode_rows(self) -> list[int]:
        return [rows for rows, positions in self.shapes if positions == 1]


@contextmanager
def recorded(model, hold_at: int | None = None) -> Iterator[Forwards]:
    """Record ``model``'s forwards; with ``hold_at``, the engine's thread waits in that forward until released."""
    forwards = Forwards(hold_at=hold_at)
    original = model.forward

    def forward(*args, **kwargs):
        forwards.shapes.append(tuple(kwargs["input_ids"].shape))
        forwards.widths.append(kwargs["attention_mask"].shape[1])
        if kwargs["input_ids"].shape[1] == 1 and len(forwards.decode_rows) == forwards.hold_at:
            forwards.held.set()
            assert forwards.release.wait(60), "the test never released the held forward"
        return original(*args, **kwargs)

    model.forward = forward
    try:
        yield forwards
    finally:
        forwards.release.set()
        del model.forward


def _alone(llm, cases):
    return [llm.generate(prompt, trace=True, **settings) for prompt, settings in cases]


def _rows(settings) -> int:
    return 2 if settings.get("method") in ("opad", "linear", "pad", "aad") else 1


def _same(results, alone):
    assert [r.token_ids for r in results] == [r.token_ids for r in alone]
    assert [r.text for r in results] == [r.text for r in alone]
    assert [r.finish_reason for r in results] == [r.finish_reason for r in alone]


def arriving_mid_flight(llm, cases) -> tuple[list, Forwards]:
    """The first case decodes alone for three steps, then the others join it; every result, and the forwards."""
    with recorded(llm.model, hold_at=3) as forwards:
        first = llm.submit(cases[0][0], trace=True, **cases[0][1])
        assert forwards.held.wait(60)
        later = [llm.submit(prompt, trace=True, **settings) for prompt, settings in cases[1:]]
        forwards.release.set()
        results = [first.result(), *[generation.result() for generation in later]]
    return results, forwards


def test_requests_of_every_method_arriving_mid_flight_decode_as_if_alone(tiny_pair_llm):
    llm = tiny_pair_llm
    alone = _alone(llm, MIXED)
    assert alone[0].finish_reason == "length"
    results, forwards = arriving_mid_flight(llm, MIXED)
    _same(results, alone)
    for result, reference in zip(results, alone, strict=True):
        assert [t.token_id for t in result.trace] == [t.token_id for t in reference.trace]
        for token, expected in zip(result.trace, reference.trace, strict=True):
            assert token.logprobs == pytest.approx(expected.logprobs, abs=1e-4)
            assert token.score == pytest.approx(expected.score, abs=1e-4)
    past_first_step = sum(_rows(settings) for (_, settings), r in zip(MIXED, alone, strict=True) if r.output_tokens > 1)
    assert forwards.decode_rows[:3] == [1, 1, 1], "the first request was decoding alone when the others arrived"
    assert max(forwards.decode_rows) == past_first_step, "every request shares one forward per step"


def test_a_request_that_joins_prefills_in_chunks_while_the_batch_keeps_stepping(tiny_llm, monkeypatch):
    monkeypatch.setattr(prefill_module, "PREFILL_CHUNK", 6)
    long_prompt = "Tell me everything about " + "the old lighthouse and the sea, " * 6
    alone = _alone(tiny_llm, [(SHORT, {"max_new_tokens": 30}), (long_prompt, {"max_new_tokens": 6})])
    with recorded(tiny_llm.model, hold_at=2) as forwards:
        running = tiny_llm.submit(SHORT, trace=True, max_new_tokens=30)
        assert forwards.held.wait(60)
        held = len(forwards.shapes)
        joining = tiny_llm.submit(long_prompt, trace=True, max_new_tokens=6)
        forwards.release.set()
        results = [running.result(), joining.result()]
    _same(results, alone)
    after = forwards.shapes[held:]
    chunks = [index for index, (rows, positions) in enumerate(after) if positions == 6]
    assert len(chunks) >= 3
    between = after[chunks[0] : chunks[-1]]
    assert (1, 1) in between, "the running request must step between the newcomer's prefill chunks"
    assert (2, 1) in after, "after its prefill the newcomer joins the running request's forward"


def test_rows_on_a_second_model_and_on_the_first_share_steps(tiny_dir, tiny_reference_dir):
    llm = AlignedLLM.from_pretrained(tiny_dir, reference=tiny_reference_dir, device="cpu")
    cases = [
        (LONG, {"method": "aad", "alpha": 0.3, "max_new_tokens": 10}),
        (SHORT, {"method": "opad", "principle": PRINCIPLE, "max_new_tokens": 12}),
        ("Hi", {"max_new_tokens": 8}),
    ]
    alone = _alone(llm, cases)
    with recorded(llm.model, hold_at=2) as policy, recorded(llm.reference) as reference:
        first = llm.submit(cases[0][0], trace=True, **cases[0][1])
        assert policy.held.wait(60)
        later = [llm.submit(prompt, trace=True, **settings) for prompt, settings in cases[1:]]
        policy.release.set()
        results = [first.result(), *[generation.result() for generation in later]]
    _same(results, alone)
    assert max(policy.decode_rows) == 4, "AAD's DPO row, OPAD's two rows and vanilla's row in one policy forward"
    assert max(reference.decode_rows) == 1, "only AAD's SFT row runs on the reference model"


def test_without_the_lora_gate_mixed_adapters_still_decode_as_if_alone(tiny_pair_llm, monkeypatch):
    cases = [MIXED[4], MIXED[0], MIXED[1]]
    alone = _alone(tiny_pair_llm, cases)
    monkeypatch.setattr("aligned_llm.engine.kv.forward.lora_gate", lambda _model, _rows: None)
    generations = [tiny_pair_llm.submit(prompt, trace=True, **settings) for prompt, settings in cases]
    _same([generation.result() for generation in generations], alone)


def test_a_cancelled_request_leaves_and_the_others_go_on(tiny_llm):
    cases = [(LONG, {"max_new_tokens": 20}), (SHORT, {"method": "opad", "principle": PRINCIPLE, "max_new_tokens": 20})]
    alone = _alone(tiny_llm, cases)
    assert alone[1].finish_reason == "length"
    with recorded(tiny_llm.model, hold_at=5) as forwards:
        generations = [tiny_llm.submit(prompt, **settings) for prompt, settings in cases]
        assert forwards.held.wait(60)
        generations[0].cancel()
        forwards.release.set()
        cancelled, survivor = (generation.result() for generation in generations)
    assert cancelled.finish_reason == "cancelled"
    assert 0 < cancelled.output_tokens < 20
    assert cancelled.token_ids == alone[0].token_ids[: cancelled.output_tokens]
    _same([survivor], alone[1:])
    rows_after_cancel = forwards.decode_rows[-1]
    assert rows_after_cancel == 2, "only OPAD's two rows are left in the batch"


def test_cancel_reaches_a_request_waiting_for_room_without_model_work(tiny_llm):
    llm = AlignedLLM(tiny_llm.model, tiny_llm.tokenizer, max_batch_rows=1)
    with recorded(llm.model, hold_at=1) as forwards:
        running = llm.submit(LONG, max_new_tokens=12)
        assert forwards.held.wait(60)
        waiting = llm.submit(SHORT, max_new_tokens=12)
        waiting.cancel()
        forwards.release.set()
        result = waiting.result()
        assert running.result().finish_reason == "length"
    assert result.finish_reason == "cancelled" and result.output_tokens == 0
    assert max(forwards.decode_rows) == 1


class _FailsAtStep(DecodingMethod):
    """Vanilla until ``step``, then NaN scores: the engine must refuse them, for this request only."""

    name: ClassVar[str] = "fails-at-step"
    rows: ClassVar[tuple[RowSpec, ...]] = (RowSpec("policy", guided=True),)

    def __init__(self, step: int) -> None:
        self.fail_step = step

    def score(self, logits, state, step):
        scores = torch.log_softmax(logits[:, 0], dim=-1)
        if step == self.fail_step:
            scores = torch.full_like(scores, float("nan"))
        return StepScores(scores, torch.zeros_like(scores), state)


def test_a_failing_request_fails_alone_and_the_batch_goes_on(tiny_llm):
    alone = tiny_llm.generate(LONG, max_new_tokens=12)
    good = tiny_llm.submit(LONG, max_new_tokens=12)
    bad = tiny_llm.submit(SHORT, method=_FailsAtStep(3), max_new_tokens=12)
    with pytest.raises(NonFiniteLogitsError, match="step 3"):
        bad.result()
    assert good.result().token_ids == alone.token_ids
    stream = tiny_llm.stream(SHORT, method=_FailsAtStep(2), max_new_tokens=12)
    with pytest.raises(NonFiniteLogitsError):
        list(stream)


def test_the_budget_bounds_the_running_batch_and_every_request_still_finishes(tiny_llm):
    cases = [(f"{SHORT} ({n})", {"max_new_tokens": 6 + n}) for n in range(4)]
    cases.append((LONG, {"method": "opad", "principle": PRINCIPLE, "max_new_tokens": 8}))
    alone = _alone(tiny_llm, cases)
    slots = 130  # two short requests (about 41 + 9 positions each) fit, the OPAD one (2 × 64) only alone
    llm = AlignedLLM(tiny_llm.model, tiny_llm.tokenizer, max_batch_rows=3, max_kv_tokens=slots)
    with recorded(llm.model) as forwards:
        generations = [llm.submit(prompt, trace=True, **settings) for prompt, settings in cases]
        results = [generation.result() for generation in generations]
    _same(results, alone)
    assert all(
        rows <= 3 and rows * width <= slots for (rows, _), width in zip(forwards.shapes, forwards.widths, strict=True)
    )
    assert max(forwards.decode_rows) > 1, "requests that fit share forwards"


def test_a_batch_of_prompts_larger_than_the_budget_is_admitted_in_parts(tiny_llm):
    prompts = [f"Count to {n}." for n in range(5)]
    alone = [tiny_llm.generate(prompt, max_new_tokens=6) for prompt in prompts]
    llm = AlignedLLM(tiny_llm.model, tiny_llm.tokenizer, max_batch_rows=2)
    with recorded(llm.model) as forwards:
        results = llm.generate(prompts, max_new_tokens=6)
    assert [r.token_ids for r in results] == [r.token_ids for r in alone]
    assert max(rows for rows, _ in forwards.shapes) == 2


def test_a_request_that_can_never_fit_is_refused_before_model_work(tiny_llm, monkeypatch):
    def no_forward(*args, **kwargs):
        raise AssertionError("the model ran for a request that can never fit")

    monkeypatch.setattr(tiny_llm.model, "forward", no_forward)
    small = AlignedLLM(tiny_llm.model, tiny_llm.tokenizer, max_kv_tokens=70)
    with pytest.raises(PromptTooLongError, match="max_kv_tokens is 70") as raised:
        small.generate(LONG, max_new_tokens=30)
    assert raised.value.parameter == "prompt"
    with pytest.raises(PromptTooLongError, match=r"prompt\[1\]"):
        small.check(["Hi", LONG], max_new_tokens=30)
    one_row = AlignedLLM(tiny_llm.model, tiny_llm.tokenizer, max_batch_rows=1)
    with pytest.raises(InvalidSettingError, match="max_batch_rows=1") as raised:
        one_row.stream("Hi", method="opad", principle=PRINCIPLE, max_new_tokens=8)
    assert raised.value.parameter == "method"


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        ({"max_batch_rows": 0}, "max_batch_rows"),
        ({"max_kv_tokens": 1.5}, "max_kv_tokens"),
        ({"batching": "per-call"}, "batching"),
        ({"kv_store": "paged"}, "kv_store"),
    ],
)
def test_bad_batching_options_name_themselves(tiny_llm, tiny_dir, options, parameter):
    with pytest.raises(InvalidSettingError) as raised:
        AlignedLLM(tiny_llm.model, tiny_llm.tokenizer, **options)
    assert raised.value.parameter == parameter
    with pytest.raises(InvalidSettingError):
        AlignedLLM.from_pretrained(tiny_dir / "missing", **options)


async def test_concurrent_async_callers_share_forwards_and_decode_as_if_alone(tiny_pair_llm):
    llm = tiny_pair_llm
    alone = _alone(llm, MIXED)
    streamed = MIXED[2]

    async def stream_text():
        stream = llm.astream(streamed[0], **streamed[1])
        return "".join([delta async for delta in stream]), stream.result

    with recorded(llm.model) as forwards:
        results = await asyncio.gather(
            *(llm.agenerate(prompt, trace=True, **settings) for prompt, settings in MIXED), stream_text()
        )
    text, stream_result = results.pop()
    _same(results, alone)
    assert text == alone[2].text and stream_result.token_ids == alone[2].token_ids
    assert max(forwards.decode_rows) >= 8, "concurrent awaits share forwards"


def test_threads_calling_generate_and_stream_share_forwards(tiny_llm, monkeypatch):
    cases = [(LONG, {"max_new_tokens": 12}), (SHORT, {"method": "opad", "principle": PRINCIPLE, "max_new_tokens": 12})]
    alone = _alone(tiny_llm, cases)
    llm = AlignedLLM(tiny_llm.model, tiny_llm.tokenizer)
    submitted = threading.Semaphore(0)
    submit = llm._runner.submit

    def counting_submit(submission, **options):
        submit(submission, **options)
        submitted.release()

    monkeypatch.setattr(llm._runner, "submit", counting_submit)
    outputs: dict[str, object] = {}

    def generate():
        outputs["generate"] = llm.generate(cases[0][0], **cases[0][1])

    def stream():
        outputs["stream"] = "".join(llm.stream(cases[1][0], **cases[1][1]))

    with recorded(llm.model, hold_at=1) as forwards:
        threads = [threading.Thread(target=generate), threading.Thread(target=stream)]
        threads[0].start()
        assert forwards.held.wait(60)
        threads[1].start()
        assert submitted.acquire(timeout=60) and submitted.acquire(timeout=60)
        forwards.release.set()
        for thread in threads:
            thread.join()
    assert outputs["generate"].token_ids == alone[0].token_ids
    assert outputs["stream"] == alone[1].text
    assert 3 in forwards.decode_rows, "the generate call's row and the stream's two rows share forwards"


def test_the_batch_thread_stops_when_idle_or_closed_and_starts_again(tiny_llm):
    llm = AlignedLLM(tiny_llm.model, tiny_llm.tokenizer)
    first = llm.generate(SHORT, max_new_tokens=4)
    llm.close()
    assert not llm._runner.running
    stream = llm.stream(LONG, max_new_tokens=200)
    text = next(stream)
    llm.close()
    assert not llm._runner.running
    text += "".join(stream)
    assert stream.result.finish_reason == "cancelled" and stream.result.text == text
    assert llm.generate(SHORT, max_new_tokens=4).token_ids == first.token_ids
    llm._runner.join(60)
    assert not llm._runner.running, "the thread leaves once no work is left"


def test_per_call_batching_decodes_the_same_tokens(tiny_pair_llm):
    cases = MIXED[:5]
    alone = _alone(tiny_pair_llm, cases)
    per_call = PerCallLLM(tiny_pair_llm.model, tiny_pair_llm.tokenizer)
    with recorded(per_call.model) as forwards:
        generations = [per_call.submit(prompt, trace=True, **settings) for prompt, settings in cases]
        results = [generation.result() for generation in generations]
    _same(results, alone)
    assert max(forwards.decode_rows) <= 2, "per-call batching never shares a forward between calls"


def test_a_dropped_stream_stops_decoding(tiny_llm):
    llm = AlignedLLM(tiny_llm.model, tiny_llm.tokenizer)
    with recorded(llm.model, hold_at=2) as forwards:
        stream = llm.stream(LONG, max_new_tokens=200)
        next(stream)
        del stream
        forwards.release.set()
        llm._runner.join(60)
    assert not llm._runner.running
    assert len(forwards.shapes) < 200


def test_requests_with_grammars_join_a_running_batch_of_free_ones(tiny_wide_llm):
    cases = [
        (PROMPT, {"max_new_tokens": 40}),
        (PROMPT, {"tools": TOOLS, **ONE_CALL, "method": "opad", "principle": "Be brief.", "max_new_tokens": 90}),
        ("Hi", {"response_format": {"type": "json_object"}, "max_new_tokens": 30}),
    ]
    alone = _alone(tiny_wide_llm, cases)
    with recorded(tiny_wide_llm.model, hold_at=2) as forwards:
        running = tiny_wide_llm.submit(cases[0][0], trace=True, **cases[0][1])
        assert forwards.held.wait(60)
        later = [tiny_wide_llm.submit(prompt, trace=True, **settings) for prompt, settings in cases[1:]]
        forwards.release.set()
        results = [running.result(), *[generation.result() for generation in later]]
    _same(results, alone)
    assert_valid_calls(results[1])
    calls = [[(call.name, call.arguments) for call in r.tool_calls] for r in (results[1], alone[1])]
    assert calls[0] == calls[1]
    assert results[2].parsed == alone[2].parsed
    assert max(forwards.decode_rows) == 4, "free, constrained and JSON requests share one forward"


def test_a_burst_is_prefilled_in_parts_and_the_first_parts_decode_meanwhile(tiny_llm, monkeypatch):
    monkeypatch.setattr(planner_module, "PREFILL_TOKENS", 100)  # two ~45-token prompts per prefill forward
    cases = [(f"{SHORT} ({n})", {"max_new_tokens": 8}) for n in range(5)]
    alone = _alone(tiny_llm, cases)
    with recorded(tiny_llm.model, hold_at=1) as forwards:
        running = tiny_llm.submit(LONG, max_new_tokens=30)
        assert forwards.held.wait(60)
        held = len(forwards.shapes)
        burst = [tiny_llm.submit(prompt, trace=True, **settings) for prompt, settings in cases]
        forwards.release.set()
        results = [generation.result() for generation in burst]
        running.result()
    _same(results, alone)
    prefills = [index for index, (rows, positions) in enumerate(forwards.shapes[held:]) if positions > 1]
    assert [forwards.shapes[held + index][0] for index in prefills] == [2, 2, 1]
    between = forwards.shapes[held + prefills[0] : held + prefills[-1]]
    assert (3, 1) in between, "the first two newcomers decode with the running request before the last is prefilled"


@pytest.mark.parametrize("timeout", ["x", -1, math.nan, math.inf, True], ids=["text", "negative", "nan", "inf", "bool"])
def test_close_refuses_a_bad_timeout_and_cancels_nothing(tiny_llm, timeout):
    llm = AlignedLLM(tiny_llm.model, tiny_llm.tokenizer)
    stream = llm.stream(LONG, max_new_tokens=16)
    next(stream)
    with pytest.raises(InvalidSettingError, match=r"^timeout: must be a finite number >= 0, got "):
        llm.close(timeout=timeout)
    list(stream)
    assert stream.result.finish_reason in ("length", "stop"), "the refused close cancelled the stream"
    llm.close(timeout=30.0)
    assert not llm._runner.running


def test_a_blocking_generate_decodes_on_its_thread_and_hands_what_is_left_to_the_batch_thread(tiny_llm):
    llm = AlignedLLM(tiny_llm.model, tiny_llm.tokenizer)
    threads: list[str] = []
    handle = llm.model.register_forward_hook(lambda *_: threads.append(threading.current_thread().name))
    try:
        llm.generate(SHORT, max_new_tokens=4)
        assert set(threads) == {threading.current_thread().name}, "no thread hop for a lone blocking call"
        threads.clear()
        outputs = {}
        with recorded(llm.model, hold_at=1) as forwards:
            caller = threading.Thread(
                target=lambda: outputs.setdefault("short", llm.generate(SHORT, max_new_tokens=4)), name="caller"
            )
            caller.start()
            assert forwards.held.wait(60)
            long = llm.submit(LONG, max_new_tokens=20)
            forwards.release.set()
            caller.join(60)
            result = long.result(60)
    finally:
        handle.remove()
    assert outputs["short"].token_ids == _alone(tiny_llm, [(SHORT, {"max_new_tokens": 4})])[0].token_ids
    assert result.token_ids == _alone(tiny_llm, [(LONG, {"max_new_tokens": 20})])[0].token_ids
    assert threads[0] == "caller" and threads[-1] == "aligned-llm-batch", "the batch thread took over the long one"
    llm.close()
    assert not llm._runner.running
