"""The server behind the clients people use: LangChain ChatOpenAI, LlamaIndex OpenAILike; the bundled model."""

from __future__ import annotations

import openai
import pytest

from aligned_llm import create_app
from tests.serving import LOCALHOST, SERVED_MODEL, WAIT_S, running_server, serve_tiny

pytestmark = pytest.mark.allow_hosts(LOCALHOST)

LANGCHAIN_OPENAI_MISSING = "langchain-openai is not installed (the dev extra has it)"
OPENAI_LIKE_MISSING = "llama-index-llms-openai-like is not installed (the dev extra has it)"
PROMPT = "Tell me about the sea."
PRINCIPLE = "Answer like a pirate."


@pytest.fixture(scope="module")
def base_url(tiny_pair_llm):
    with serve_tiny(tiny_pair_llm) as url:
        yield url


def test_langchain_chat_openai_with_extra_body(base_url, tiny_pair_llm):
    pytest.importorskip("langchain_openai", reason=LANGCHAIN_OPENAI_MISSING)
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(
        base_url=f"{base_url}/v1", api_key="x", model=SERVED_MODEL, temperature=0, max_tokens=8, max_retries=0,
        extra_body={"method": "opad", "principle": PRINCIPLE},
    )  # fmt: skip
    expected = tiny_pair_llm.generate(PROMPT, method="opad", principle=PRINCIPLE, max_new_tokens=8)
    message = chat.invoke(PROMPT)
    assert message.content == expected.text
    assert message.usage_metadata["output_tokens"] == expected.output_tokens
    assert "".join(chunk.content for chunk in chat.stream(PROMPT)) == expected.text
    linear = chat.bind(extra_body={"method": "linear", "principle": PRINCIPLE, "rho": 2.0})
    assert (
        linear.invoke(PROMPT).content
        == tiny_pair_llm.generate(PROMPT, method="linear", principle=PRINCIPLE, rho=2.0, max_new_tokens=8).text
    )


async def test_langchain_async_and_a_refused_setting(base_url, tiny_pair_llm):
    pytest.importorskip("langchain_openai", reason=LANGCHAIN_OPENAI_MISSING)
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(base_url=f"{base_url}/v1", api_key="x", model=SERVED_MODEL, temperature=0, max_tokens=6,
                      max_retries=0, extra_body={"method": "aad", "alpha": 0.3})  # fmt: skip
    expected = tiny_pair_llm.generate(PROMPT, method="aad", alpha=0.3, max_new_tokens=6)
    assert (await chat.ainvoke(PROMPT)).content == expected.text
    with pytest.raises(openai.BadRequestError, match="alpha"):
        await chat.bind(extra_body={"method": "aad", "alpha": 2}).ainvoke(PROMPT)


def test_llamaindex_openai_like(base_url, tiny_pair_llm):
    pytest.importorskip("llama_index.llms.openai_like", reason=OPENAI_LIKE_MISSING)
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(
        model=SERVED_MODEL, api_base=f"{base_url}/v1", api_key="x", is_chat_model=True, temperature=0.0, max_tokens=8,
        context_window=tiny_pair_llm.context_window, max_retries=0, timeout=WAIT_S,
        additional_kwargs={"extra_body": {"method": "pad", "profile": "humorous", "k": 4}},
    )  # fmt: skip
    expected = tiny_pair_llm.generate(PROMPT, method="pad", profile="humorous", k=4, max_new_tokens=8)
    assert llm.chat([ChatMessage(role="user", content=PROMPT)]).message.content == expected.text
    assert llm.complete(PROMPT).text == expected.text
    streamed = llm.stream_chat([ChatMessage(role="user", content=PROMPT)])
    assert "".join(part.delta or "" for part in streamed) == expected.text


@pytest.mark.bundled
def test_bundled_model_served_end_to_end(bundled_llm):
    principle = "Answer like a pirate."
    question = "What is the capital of France?"
    with running_server(create_app(bundled_llm)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=WAIT_S)
        served = client.models.list().data[0].id
        answer = client.chat.completions.create(
            model=served, messages=[{"role": "user", "content": question}], max_tokens=40,
            extra_body={"method": "opad", "principle": principle},
        )  # fmt: skip
        plain = client.chat.completions.create(
            model=served, messages=[{"role": "user", "content": question}], max_tokens=40
        )
    expected = bundled_llm.generate(question, method="opad", principle=principle, max_new_tokens=40)
    assert served == "SmolLM2-135M-Instruct"
    assert answer.choices[0].message.content == expected.text
    assert answer.choices[0].finish_reason == "stop"
    assert "Paris" in plain.choices[0].message.content
    assert "pirate" in answer.choices[0].message.content.lower(), "the principle steers the served answer"
