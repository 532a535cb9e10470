"""A real chain on the bundled SmolLM2: prompt template | ChatAlignedLLM | output parser, with a per-call principle."""

from __future__ import annotations

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField

from langchain_aligned_llm import ChatAlignedLLM

pytestmark = pytest.mark.bundled

SYSTEM = "You are a helpful assistant."
QUESTION = "What is the capital of Italy?"
FRENCH = "Always answer in French."
ONE_WORD = "Answer in one word."
MAX_TOKENS = 12


def test_chain_with_a_per_call_principle(bundled):
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])
    chat = ChatAlignedLLM(device="cpu", method="opad", max_tokens=MAX_TOKENS)
    assert chat.aligned_llm is bundled
    configurable = chat.configurable_fields(principle=ConfigurableField(id="principle", name="Principle to align to"))
    chain = prompt | configurable | StrOutputParser()

    french = "".join(chain.stream({"question": QUESTION}, config={"configurable": {"principle": FRENCH}}))
    one_word = chain.invoke({"question": QUESTION}, config={"configurable": {"principle": ONE_WORD}})

    conversation = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    assert french == bundled.generate(conversation, method="opad", principle=FRENCH, max_new_tokens=MAX_TOKENS).text
    assert one_word != french
