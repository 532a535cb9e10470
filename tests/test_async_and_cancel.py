"""Async generation in the core, and cancel() reaching every generation promptly (prefill included)."""

from __future__ import annotations

import asyncio

import pytest

import aligned_llm.engine.kv.padded as prefill_module
from aligned_llm.testing import count_loop_ticks

PROMPT = "Tell me a story about a lighthouse keeper."
PRINCIPLE = "Answer like a pirate."


async def test_async_stream_and_agenerate_equal_the_sync_calls(tiny_llm):
    settings = {"method": "opad", "principle": PRINCIPLE, "max_new_tokens": 8}
    expected = tiny_llm.generate(PROMPT, **settings)
    stream = tiny_llm.astream(PROMPT, **settings)
    assert "".join([delta async for delta in stream]) == expected.text
    assert stream.result.token_ids == expected.token_ids
    batch = await tiny_llm.agenerate([PROMPT, "Hi"], **settings)
    assert batch[0].token_ids == expected.token_ids
    assert [r.token_ids for r in batch] == [r.token_ids for r in tiny_llm.generate([PROMPT, "Hi"], **settings)]


async def test_agenerate_does_not_block_the_event_loop(tiny_llm):
    async with count_loop_ticks() as ticks:
        await tiny_llm.agenerate(PROMPT, max_new_tokens=16)
    assert ticks.count > 16, "the loop must run between decoding steps"


async def test_cancelling_the_awaiting_task_stops_decoding(tiny_llm):
    started = asyncio.Event()
    steps = []
    original = tiny_llm.model.forward

    def counting_forward(*args, **kwargs):
        steps.append(1)
        return original(*args, **kwargs)

    tiny_llm.model.forward = counting_forward
    try:
        task = asyncio.create_task(tiny_llm.agenerate(PROMPT, max_new_tokens=200))
        while len(steps) < 3:
            await asyncio.sleep(0.001)
        started.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        after_cancel = len(steps)
        await asyncio.sleep(0.05)
        assert len(steps) <= after_cancel + 1
        assert after_cancel < 100
    finally:
        del tiny_llm.model.forward


def test_cancel_before_the_first_step_is_not_lost(tiny_llm, monkeypatch):
    stream = tiny_llm.stream(PROMPT, max_new_tokens=8)
    tiny_llm.cancel()

    def no_forward(*args, **kwargs):
        raise AssertionError("a cancelled stream must not run the model")

    monkeypatch.setattr(tiny_llm.model, "forward", no_forward)
    assert list(stream) == []
    assert stream.result.finish_reason == "cancelled" and stream.result.output_tokens == 0


def test_cancel_interrupts_a_long_prefill_between_chunks(tiny_llm, monkeypatch):
    monkeypatch.setattr(prefill_module, "PREFILL_CHUNK", 8)
    calls = []
    original = tiny_llm.model.forward

    def forward_then_cancel(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[1])
        tiny_llm.cancel()
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_llm.model, "forward", forward_then_cancel)
    result = tiny_llm.generate("word " * 60, max_new_tokens=4)
    assert result.finish_reason == "cancelled" and result.output_tokens == 0
    assert calls == [8], "only the first chunk ran"


@pytest.mark.parametrize("method", ["vanilla", "opad"])
def test_chunked_prefill_decodes_like_one_forward(tiny_llm, monkeypatch, method):
    settings = {"method": method, "principle": PRINCIPLE, "max_new_tokens": 8}
    prompts = [PROMPT, "A much shorter one."]
    whole = tiny_llm.generate(prompts, **settings)
    monkeypatch.setattr(prefill_module, "PREFILL_CHUNK", 5)
    chunked = tiny_llm.generate(prompts, **settings)
    assert [r.token_ids for r in chunked] == [r.token_ids for r in whole]


async def test_a_cancel_scope_leaves_no_step_running(tiny_llm):
    """anyio (every ASGI server) cancels each await again inside a cancelled scope; the step in flight still ends."""
    import anyio

    stream = tiny_llm.astream(PROMPT, max_new_tokens=200)
    with anyio.move_on_after(0.05):
        async for _ in stream:
            pass
    stream.close()  # "generator already executing" if a step were still running on its worker thread
    assert stream.result is None or stream.result.finish_reason in ("cancelled", "length", "stop")
