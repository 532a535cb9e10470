"""AlignedLLMText: string in, string out, with the same settings, batching and streaming as the chat model."""

from __future__ import annotations

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from langchain_aligned_llm import AlignedLLMText

PRINCIPLE = "Answer like a pirate."


class TokenRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs) -> None:
        self.tokens.append(token)


@pytest.fixture
def text_llm(tiny_model_dir) -> AlignedLLMText:
    return AlignedLLMText(model=tiny_model_dir, device="cpu", max_tokens=8)


def test_invoke_returns_the_core_text(text_llm, tiny):
    assert text_llm.invoke("Hello") == tiny.generate("Hello", max_new_tokens=8).text


def test_per_call_settings_and_generation_info(text_llm, tiny, spy):
    result = text_llm.generate(["Hello"], method="opad", principle=PRINCIPLE, beta=2.0)
    assert spy.calls[-1].settings["principle"] == PRINCIPLE
    generation = result.generations[0][0]
    expected = tiny.generate("Hello", method="opad", principle=PRINCIPLE, beta=2.0, max_new_tokens=8)
    assert generation.text == expected.text
    assert generation.generation_info["method"] == "opad"
    assert generation.generation_info["usage"]["output_tokens"] == expected.output_tokens
    assert result.llm_output["model_name"] == text_llm.model


def test_batch_is_one_engine_batch(text_llm, spy):
    prompts = ["Hello", "Tell me a joke.", "Name a colour."]
    serial = [text_llm.invoke(prompt) for prompt in prompts]
    spy.calls.clear()
    assert text_llm.batch(prompts) == serial
    assert [call.batch_size for call in spy.calls] == [len(prompts)]


def test_stream_fires_a_callback_per_token(text_llm):
    recorder = TokenRecorder()
    deltas = list(text_llm.stream("Hello", config={"callbacks": [recorder]}))
    assert sum(1 for delta in deltas if delta) > 1
    assert "".join(deltas) == text_llm.invoke("Hello")
    assert recorder.tokens == deltas


async def test_astream_and_ainvoke(text_llm):
    deltas = [delta async for delta in text_llm.astream("Hello", stop=["e"])]
    assert "".join(deltas) == await text_llm.ainvoke("Hello", stop=["e"])
    assert "e" not in "".join(deltas)
