"""AlignedHF as a LlamaIndex LLM on a tiny random model: metadata, chat template, streaming, async, usage."""

from __future__ import annotations

import asyncio
import inspect
import threading

import pytest
from aligned_llm import InvalidSettingError
from aligned_llm.testing import count_loop_ticks
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent
from llama_index.core.node_parser import SentenceSplitter

from llama_index.llms.aligned import AlignedHF, model_tokenizer

PROMPT = "Name three colours."
MESSAGES = [
    ChatMessage(role=MessageRole.SYSTEM, content="You are terse."),
    ChatMessage(role=MessageRole.USER, content="Hello there."),
    ChatMessage(role=MessageRole.ASSISTANT, content="Hi."),
    ChatMessage(role=MessageRole.USER, content="Name three colours."),
]
CORE_MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello there."},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": "Name three colours."},
]


def test_metadata_comes_from_the_model(tiny, tiny_core):
    meta = tiny.metadata
    assert meta.is_chat_model and meta.is_function_calling_model
    assert meta.num_output == 8
    assert meta.model_name == tiny_core.name
    assert 0 < tiny_core.context_window - meta.context_window < 40, "only the chat template's markup is kept free"
    guided = tiny.with_settings(method="opad", principle="Answer in French, with short sentences and no lists.")
    principle_tokens = len(tiny_core.tokenizer.encode("\n\n" + guided.principle, add_special_tokens=False))
    assert meta.context_window - guided.metadata.context_window == pytest.approx(principle_tokens, abs=2)
    assert tiny.with_settings(context_window=128).metadata.context_window == meta.context_window - (
        tiny_core.context_window - 128
    )


def test_complete_renders_one_user_turn_and_reports_usage(tiny, tiny_core):
    response = tiny.complete(PROMPT)
    expected = tiny_core.generate(PROMPT, max_new_tokens=8)
    assert response.text == expected.text
    assert response.raw["usage"] == {
        "prompt_tokens": expected.input_tokens,
        "completion_tokens": expected.output_tokens,
        "total_tokens": expected.input_tokens + expected.output_tokens,
    }
    assert response.raw["finish_reason"] == expected.finish_reason
    assert response.raw["model"] == tiny_core.name


def test_chat_uses_the_chat_template_not_a_flattened_prompt(tiny, tiny_core):
    response = tiny.chat(MESSAGES)
    assert response.message.role == MessageRole.ASSISTANT
    assert response.message.content == tiny_core.generate(CORE_MESSAGES, max_new_tokens=8).text
    flattened = tiny_core.generate(tiny.messages_to_prompt(MESSAGES), max_new_tokens=8)
    assert response.raw["usage"]["prompt_tokens"] != flattened.input_tokens


def test_consecutive_system_messages_are_joined(tiny, tiny_core):
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="Rule one."),
        ChatMessage(role=MessageRole.DEVELOPER, content="Rule two."),
        ChatMessage(role=MessageRole.USER, content=PROMPT),
    ]
    joined = [{"role": "system", "content": "Rule one.\n\nRule two."}, {"role": "user", "content": PROMPT}]
    assert tiny.chat(messages).message.content == tiny_core.generate(joined, max_new_tokens=8).text


def test_function_messages_and_images_are_refused_by_name(tiny):
    with pytest.raises(InvalidSettingError, match="function") as error:
        tiny.chat([ChatMessage(role=MessageRole.USER, content="hi"), ChatMessage(role=MessageRole.FUNCTION)])
    assert error.value.parameter == "messages[1].role"
    image = ChatMessage(
        role=MessageRole.USER, blocks=[TextBlock(text="What is this?"), ImageBlock(url="http://x/y.png")]
    )
    with pytest.raises(InvalidSettingError, match="ImageBlock"):
        tiny.chat([image])


def test_streams_concatenate_to_the_plain_answer_and_end_with_usage(tiny):
    chunks = list(tiny.stream_complete(PROMPT))
    assert "".join(chunk.delta for chunk in chunks) == chunks[-1].text == tiny.complete(PROMPT).text
    assert all(chunk.text.endswith(chunk.delta) for chunk in chunks)
    assert [chunk.raw is not None for chunk in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].raw["usage"]["completion_tokens"] == 8

    chat_chunks = list(tiny.stream_chat(MESSAGES))
    assert "".join(chunk.delta for chunk in chat_chunks) == tiny.chat(MESSAGES).message.content
    assert chat_chunks[-1].message.content == tiny.chat(MESSAGES).message.content
    assert chat_chunks[-1].raw["usage"] == tiny.chat(MESSAGES).raw["usage"]


def test_an_abandoned_stream_releases_the_model(tiny):
    stream = tiny.stream_complete(PROMPT, max_new_tokens=20)
    next(stream)
    stream.close()
    finished = threading.Event()
    worker = threading.Thread(target=lambda: (tiny.complete(PROMPT), finished.set()))
    worker.start()
    worker.join(timeout=60)
    assert finished.is_set(), "another thread could not generate after the stream was closed"


async def test_async_variants_match_sync_and_stream_as_async_generators(tiny):
    assert (await tiny.acomplete(PROMPT)).text == tiny.complete(PROMPT).text
    assert (await tiny.achat(MESSAGES)).message.content == tiny.chat(MESSAGES).message.content

    completion_stream = await tiny.astream_complete(PROMPT)
    assert inspect.isasyncgen(completion_stream)
    deltas = [chunk.delta async for chunk in completion_stream]
    assert "".join(deltas) == tiny.complete(PROMPT).text

    chat_stream = await tiny.astream_chat(MESSAGES)
    assert inspect.isasyncgen(chat_stream)
    chunks = [chunk async for chunk in chat_stream]
    last = chunks[-1]
    assert last.message.content == tiny.chat(MESSAGES).message.content
    assert last.raw["usage"]["prompt_tokens"] > 0


async def test_async_generation_leaves_the_event_loop_free(tiny):
    async with count_loop_ticks() as ticks:
        await tiny.acomplete(PROMPT, max_new_tokens=16)
        during_complete = ticks.count
        stream = await tiny.astream_chat(MESSAGES, max_new_tokens=16)
        async for _ in stream:
            pass
    assert during_complete > 0, "acomplete blocked the event loop"
    assert ticks.count > during_complete, "astream_chat blocked the event loop"


async def test_breaking_out_of_an_async_stream_releases_the_model(tiny):
    stream = await tiny.astream_complete(PROMPT, max_new_tokens=20)
    async for _ in stream:
        break
    await stream.aclose()
    response = await asyncio.wait_for(tiny.acomplete(PROMPT), timeout=60)
    assert response.text == tiny.complete(PROMPT).text


def test_per_call_settings_reach_the_engine_and_leave_the_instance_alone(tiny):
    guided = tiny.complete(PROMPT, method="opad", principle="Be brief.", beta=2.0, trace=True)
    assert guided.raw["method"] == "opad"
    assert set(guided.raw["trace"][0].logprobs) == {"constrained", "unconstrained"}
    assert guided.raw["settings"] == {
        "method": "opad", "principle": "Be brief.", "beta": 2.0, "max_new_tokens": 8, "trace": True,
    }  # fmt: skip
    assert tiny.method == "vanilla" and tiny.principle is None and tiny.beta is None
    plain = tiny.complete(PROMPT)
    assert plain.raw["method"] == "vanilla" and "trace" not in plain.raw
    assert guided.raw["usage"]["prompt_tokens"] > plain.raw["usage"]["prompt_tokens"], "principle in the prompt"


def test_stop_strings_end_the_answer(tiny):
    full = tiny.complete(PROMPT, max_new_tokens=16).text
    stop = full.strip().split()[2]
    cut = tiny.complete(PROMPT, max_new_tokens=16, stop=[stop])
    assert cut.text == full[: full.index(stop)]
    assert cut.raw["finish_reason"] == "stop"


def test_model_tokenizer_drives_llama_index_counting(tiny, tiny_core):
    Settings.tokenizer = model_tokenizer(tiny)
    text = "Decoding-time alignment, with a principle."
    assert Settings.tokenizer(text) == tiny_core.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert model_tokenizer(tiny_core)(text) == Settings.tokenizer(text)


def test_token_counter_reads_the_model_usage(tiny_core):
    counter = TokenCountingHandler(tokenizer=model_tokenizer(tiny_core))
    llm = AlignedHF(tiny_core, max_new_tokens=8, callback_manager=CallbackManager([counter]))
    response = llm.chat(MESSAGES)
    streamed = list(llm.stream_complete(PROMPT))[-1]
    assert [event.prompt_token_count for event in counter.llm_token_counts] == [
        response.raw["usage"]["prompt_tokens"], streamed.raw["usage"]["prompt_tokens"],
    ]  # fmt: skip
    assert counter.completion_llm_token_count == 16


def test_packed_prompts_fit_the_window_with_and_without_a_principle(tiny_core, events):
    """LlamaIndex packs retrieved text up to the window it is told; the real prompt must still fit."""
    Settings.tokenizer = model_tokenizer(tiny_core)
    facts = " ".join(f"Fact {i}: the moon rock number {i} is grey and {i * 7} grams." for i in range(60))
    index = VectorStoreIndex.from_documents(
        [Document(text=facts)], transformations=[SentenceSplitter(chunk_size=64, chunk_overlap=0)]
    )
    plain = AlignedHF(tiny_core, max_new_tokens=16)
    guided = plain.with_settings(method="opad", principle="Always answer politely, in full sentences, citing facts.")
    for llm in (plain, guided):
        engine = index.as_query_engine(llm=llm, similarity_top_k=8, response_mode="simple_summarize")
        engine.query("How heavy is moon rock number 7?")
    used = [event.response.raw["usage"]["prompt_tokens"] for event in events.of(LLMChatEndEvent)]
    assert len(used) == 2
    assert all(tiny_core.context_window - 40 < tokens + 16 <= tiny_core.context_window for tokens in used)


async def test_async_query_engine_answers_like_the_sync_one(tiny_core):
    index = VectorStoreIndex.from_documents([Document(text="Basalt forms when lava cools quickly.")])
    llm = AlignedHF(tiny_core, max_new_tokens=8)
    engine = index.as_query_engine(llm=llm, response_mode="simple_summarize")
    question = "How does basalt form?"
    assert str(await engine.aquery(question)) == str(engine.query(question))
