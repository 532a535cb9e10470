"""Principle injection follows the spec: system message, template default, or first user turn."""

from __future__ import annotations

import copy

import pytest

from aligned_llm.prompts import ChatFormat

PRINCIPLE = "Answer in lowercase."
NO_SYSTEM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<turn {{ m['role'] }}>{{ m['content'] }}</turn>{% endfor %}"
    "{% if add_generation_prompt %}<turn assistant>{% endif %}"
)


@pytest.fixture()
def chat(tokenizer):
    return ChatFormat(tokenizer)


def test_smollm_template_default_system_text_is_detected(chat):
    assert chat.supports_system
    assert chat.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def test_principle_is_appended_to_the_template_default_system(chat, tokenizer):
    conversation = [{"role": "user", "content": "Hi"}]
    guided = chat.with_principle(conversation, PRINCIPLE)
    plain_text = tokenizer.decode(chat.encode(conversation))
    guided_text = tokenizer.decode(chat.encode(guided))
    assert guided_text == plain_text.replace(chat.default_system, f"{chat.default_system}\n\n{PRINCIPLE}")


def test_principle_is_appended_to_an_existing_system_message(chat):
    conversation = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    original = copy.deepcopy(conversation)
    guided = chat.with_principle(conversation, PRINCIPLE)
    assert guided[0] == {"role": "system", "content": f"Be kind.\n\n{PRINCIPLE}"}
    assert guided[1:] == conversation[1:]
    assert conversation == original, "the caller's conversation must not be modified"


def test_template_without_system_role_gets_the_principle_in_the_first_user_turn(tokenizer):
    custom = copy.deepcopy(tokenizer)
    custom.chat_template = NO_SYSTEM_TEMPLATE
    chat = ChatFormat(custom)
    assert not chat.supports_system
    conversation = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    guided = chat.with_principle(conversation, PRINCIPLE)
    assert guided[0]["content"] == f"{PRINCIPLE}\n\nHi"
    assert guided[1:] == conversation[1:]


def test_empty_principle_changes_nothing(chat):
    conversation = [{"role": "user", "content": "Hi"}]
    assert chat.with_principle(conversation, "  ") == conversation


def test_trailing_assistant_message_is_continued(chat, tokenizer):
    conversation = [{"role": "user", "content": "Count to three."}, {"role": "assistant", "content": "One,"}]
    text = tokenizer.decode(chat.encode(conversation))
    assert text.endswith("One,")


def test_end_of_turn_tokens_include_the_template_marker(chat, tokenizer):
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in chat.stop_token_ids(None)
