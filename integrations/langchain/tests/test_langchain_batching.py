"""batch()/abatch(): concurrent calls share the model's forwards (the running batch) and give the serial texts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from aligned_llm import AlignedLLM, PromptTooLongError
from aligned_llm.loading import bundled_model_dir
from aligned_llm.testing import count_forwards
from langchain_core.caches import InMemoryCache
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField
from transformers import AutoTokenizer

from langchain_aligned_llm import ChatAlignedLLM

PROMPTS = ["Hello", "Tell me a joke.", "What is two plus two?", "Name a colour."]
PRINCIPLES = [None, "Be brief.", "Answer like a pirate.", "Be formal."]


@pytest.fixture
def chat(tiny_model_dir) -> ChatAlignedLLM:
    return ChatAlignedLLM(model=tiny_model_dir, device="cpu", max_tokens=6)


LONG = 24
"""Answer length for the sharing tests: long enough that concurrent calls overlap for most of their steps."""


def test_batch_shares_forwards_and_gives_the_serial_texts(tiny_model_dir, tiny):
    chat = ChatAlignedLLM(model=tiny_model_dir, device="cpu", max_tokens=LONG)
    with count_forwards(tiny) as serial_forwards:
        serial = [chat.invoke(prompt).content for prompt in PROMPTS]
    with count_forwards(tiny) as batch_forwards:
        batched = chat.batch(PROMPTS)
    assert [message.content for message in batched] == serial
    # every call joins the model's running batch: one forward per step serves all of them
    assert batch_forwards.count <= serial_forwards.count / 2
    assert len({message.usage_metadata["input_tokens"] for message in batched}) > 1


async def test_abatch_shares_forwards_and_gives_the_serial_texts(tiny_model_dir, tiny):
    chat = ChatAlignedLLM(model=tiny_model_dir, device="cpu", max_tokens=LONG)
    with count_forwards(tiny) as serial_forwards:
        serial = [(await chat.ainvoke(prompt)).content for prompt in PROMPTS]
    with count_forwards(tiny) as batch_forwards:
        batched = await chat.abatch(PROMPTS)
    assert [message.content for message in batched] == serial
    assert batch_forwards.count <= serial_forwards.count / 2


def test_a_chain_batch_gives_each_input_its_answer(chat):
    chain = ChatPromptTemplate.from_messages([("system", "Be kind."), ("human", "{question}")]) | chat
    answers = chain.batch([{"question": prompt} for prompt in PROMPTS])
    assert [answer.content for answer in answers] == [
        chat.invoke([("system", "Be kind."), ("human", prompt)]).content for prompt in PROMPTS
    ]


def test_concurrent_batches_of_mixed_principles_match_serial_calls(chat):
    serial = {p: [chat.invoke(prompt, principle=p).content for prompt in PROMPTS] for p in PRINCIPLES}
    assert len({tuple(texts) for texts in serial.values()}) == len(PRINCIPLES)  # principles do change the text

    with ThreadPoolExecutor(len(PRINCIPLES)) as pool:
        futures = {p: pool.submit(chat.bind(principle=p).batch, PROMPTS) for p in PRINCIPLES}
        concurrent = {p: [message.content for message in future.result()] for p, future in futures.items()}
    assert concurrent == serial

    per_input = chat.configurable_fields(principle=ConfigurableField(id="principle"))
    mixed = per_input.batch([PROMPTS[0]] * len(PRINCIPLES), [{"configurable": {"principle": p}} for p in PRINCIPLES])
    assert [message.content for message in mixed] == [serial[p][0] for p in PRINCIPLES]


def test_one_bad_input_fails_alone(chat):
    results = chat.batch(["Hello", "word " * 400, "Name a colour."], return_exceptions=True)
    assert isinstance(results[1], PromptTooLongError)
    assert [results[0].content, results[2].content] == [
        chat.invoke("Hello").content,
        chat.invoke("Name a colour.").content,
    ]


def test_cached_inputs_are_not_decoded_again(tiny_model_dir, spy):
    chat = ChatAlignedLLM(model=tiny_model_dir, device="cpu", max_tokens=6, cache=InMemoryCache())
    first = chat.batch(PROMPTS)
    decoded = len(spy.calls)
    again = chat.batch(PROMPTS)
    assert len(spy.calls) == decoded
    assert [message.content for message in again] == [message.content for message in first]


def test_batching_works_without_a_pad_token(tiny):
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir(), local_files_only=True)
    tokenizer.pad_token = None
    chat = ChatAlignedLLM(llm=AlignedLLM(tiny.model, tokenizer, name="no-pad"), max_tokens=6)
    assert chat.llm.tokenizer.pad_token_id is None
    assert [message.content for message in chat.batch(PROMPTS)] == [chat.invoke(prompt).content for prompt in PROMPTS]
