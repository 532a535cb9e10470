"""Messages reach the chat template as they are: roles and order kept, only the new text returned."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage

from langchain_aligned_llm import ChatAlignedLLM


@pytest.fixture
def chat(tiny_model_dir) -> ChatAlignedLLM:
    return ChatAlignedLLM(model=tiny_model_dir, device="cpu", max_tokens=6)


def test_roles_and_order_reach_the_chat_template_unchanged(chat, spy):
    chat.invoke(
        [
            SystemMessage("Be kind."),
            HumanMessage("Hi."),
            HumanMessage("Are you there?"),
            AIMessage("Yes."),
            SystemMessage("Now be brief."),
            ChatMessage(role="user", content="Tell me more."),
        ]
    )
    assert spy.calls[0].prompt == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi."},
        {"role": "user", "content": "Are you there?"},
        {"role": "assistant", "content": "Yes."},
        {"role": "system", "content": "Now be brief."},
        {"role": "user", "content": "Tell me more."},
    ]


def test_the_answer_is_only_the_new_text(chat, tiny):
    message = chat.invoke([SystemMessage("Be kind."), HumanMessage("Hello there")])
    expected = tiny.generate(
        [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello there"}], max_new_tokens=6
    )
    assert message.content == expected.text
    assert message.usage_metadata == {
        "input_tokens": expected.input_tokens,
        "output_tokens": expected.output_tokens,
        "total_tokens": expected.input_tokens + expected.output_tokens,
    }


def test_a_trailing_ai_message_is_continued(chat, tiny):
    message = chat.invoke([HumanMessage("Tell me a story."), AIMessage("Once upon a time")])
    expected = tiny.generate(
        [{"role": "user", "content": "Tell me a story."}, {"role": "assistant", "content": "Once upon a time"}],
        max_new_tokens=6,
    )
    assert message.content == expected.text
    assert message.content != chat.invoke("Tell me a story.").content


def test_conversations_need_not_end_with_a_human_message(chat, spy):
    message = chat.invoke([HumanMessage("Hi."), SystemMessage("Answer in one word.")])
    assert spy.calls[0].prompt[-1] == {"role": "system", "content": "Answer in one word."}
    assert message.content


def test_text_content_blocks_are_joined_and_names_ignored(chat, spy):
    chat.invoke([HumanMessage(content=[{"type": "text", "text": "Hello "}, "there"], name="alice")])
    assert spy.calls[0].prompt == [{"role": "user", "content": "Hello there"}]


@pytest.mark.parametrize(
    "message",
    [
        HumanMessage(content=[{"type": "image", "url": "https://example.com/cat.png"}]),
        ToolMessage([{"type": "image", "url": "https://example.com/cat.png"}], tool_call_id="call-1"),
        ChatMessage(role="critic", content="Too long."),
    ],
    ids=["image", "tool-message-image", "unknown-role"],
)
def test_what_cannot_be_decoded_is_refused_before_any_model_work(chat, spy, message):
    with pytest.raises(ValueError, match=r"text only|takes system, human, AI and tool messages"):
        chat.invoke([HumanMessage("Hi."), message])
    assert spy.calls == []
