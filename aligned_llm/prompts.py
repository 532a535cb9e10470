"""From what the user passed to the token ids of each context row.

Inputs are a plain string (one user turn) or OpenAI-style messages. A principle is injected
per the OPAD spec: appended to the system message after a blank line (to the template's own
default system text when the conversation has none), or, when the chat template has no
system role, prepended to the first user turn. The unguided row is the same conversation
rendered without the principle and nothing else changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, Union

from jinja2.exceptions import TemplateError
from transformers import PreTrainedTokenizerBase

from aligned_llm.answer.history import normalize_tool_message
from aligned_llm.answer.plan import AnswerPlan
from aligned_llm.answer.spec import AnswerSpec
from aligned_llm.errors import InvalidSettingError

Message = Mapping[str, Any]
Conversation = list[dict[str, Any]]
Prompt = Union[str, Sequence[Message]]
ROLES = ("system", "user", "assistant", "tool")

_SLOT = "\u2063aligned-llm-system-slot\u2063"
PROFILE_TEMPLATE = (
    "[Guidelines] Your task is to generate response by considering the following principle. "
    "[Principles] {profile} [Instruction] "
)
"""PAD's reference rendering of a user profile, prepended to the user's (last) message."""

_END_OF_TURN_MARKERS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|eom_id|>")
_PROBE = [{"role": "user", "content": "\u2063aligned-llm-user-probe\u2063"}]


def _is_conversation(value: object) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(item, Mapping) for item in value)
    )


def check_text(parameter: str, text: str) -> None:
    """Refuse text that is not valid Unicode (a lone surrogate such as U+D800): no tokenizer can read it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidSettingError(
            parameter,
            f"holds {text[error.start]!r} at index {error.start}, a lone surrogate that is not valid Unicode text; "
            "decode the text with errors='replace' (or fix its source) first",
        ) from None


def normalize_prompts(prompt: Prompt | Sequence[Prompt]) -> tuple[list[Conversation], bool]:
    """Return the conversations to decode and whether the input was a batch (a list of prompts)."""
    if isinstance(prompt, str) or _is_conversation(prompt):
        return [_to_conversation(prompt, "prompt")], False
    if isinstance(prompt, Sequence) and len(prompt) > 0:
        return [_to_conversation(item, f"prompt[{i}]") for i, item in enumerate(prompt)], True
    raise InvalidSettingError(
        "prompt",
        "must be a non-empty string, a non-empty list of {'role', 'content'} messages, "
        f"or a non-empty list of those; got {prompt!r}",
    )


def _to_conversation(prompt: object, where: str) -> Conversation:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InvalidSettingError(where, "must not be empty")
        check_text(where, prompt)
        return [{"role": "user", "content": prompt}]
    if not _is_conversation(prompt):
        raise InvalidSettingError(where, f"must be a string or a non-empty list of messages, got {prompt!r}")
    conversation: Conversation = []
    for i, message in enumerate(prompt):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise InvalidSettingError(f"{where}[{i}].role", f"must be one of {ROLES}, got {role!r}")
        if role == "tool" or (role == "assistant" and message.get("tool_calls")):
            conversation.append(normalize_tool_message(message, f"{where}[{i}]"))
            continue
        if not isinstance(content, str):
            raise InvalidSettingError(f"{where}[{i}].content", f"must be a string, got {type(content).__name__}")
        check_text(f"{where}[{i}].content", content)
        conversation.append({"role": role, "content": content})
    if not any(message["content"].strip() or message.get("tool_calls") for message in conversation):
        raise InvalidSettingError(where, "every message is empty")
    return conversation


def render_profile(profile: str | Mapping[str, float]) -> str:
    """Profile text as is; a ``{dimension: weight}`` dict as its dimensions joined by " and ".

    Dimensions of weight 0 are left out. When the weights differ they are written after each
    name ("helpful (weight 1) and humor (weight 0.5)") so the PersRM can read them; with equal
    weights the rendering is exactly the authors' ("helpful and harmless").
    """
    if isinstance(profile, str):
        return profile.strip()
    kept = {name.strip(): weight for name, weight in profile.items() if weight > 0}
    if len(set(kept.values())) == 1:
        return " and ".join(kept)
    return " and ".join(f"{name} (weight {weight:g})" for name, weight in kept.items())


class ChatFormat:
    """How one tokenizer's chat template renders conversations, and where a principle goes."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.has_template = bool(getattr(tokenizer, "chat_template", None))

    def _render(self, conversation: Conversation, **template_kwargs: Any) -> str:
        continuing = conversation[-1]["role"] == "assistant" and not conversation[-1].get("tool_calls")
        return self.tokenizer.apply_chat_template(
            conversation,
            tokenize=False,
            add_generation_prompt=not continuing,
            continue_final_message=continuing,
            **template_kwargs,
        )

    @property
    def template(self) -> str | None:
        """The chat template's source (``None`` without one, or when it is not a single string)."""
        template = getattr(self.tokenizer, "chat_template", None)
        return template if isinstance(template, str) else None

    @cached_property
    def _system_slot(self) -> tuple[bool, str]:
        """Whether the template renders a system message, and its default system text."""
        try:
            with_slot = self._render([{"role": "system", "content": _SLOT}, *_PROBE])
        except TemplateError:
            return False, ""
        if _SLOT not in with_slot:
            return False, ""
        before, after = with_slot.split(_SLOT, 1)
        without = self._render(list(_PROBE))
        if without.startswith(before) and without.endswith(after) and len(without) >= len(before) + len(after):
            return True, without[len(before) : len(without) - len(after)]
        return True, ""

    @property
    def supports_system(self) -> bool:
        return self._system_slot[0]

    @property
    def default_system(self) -> str:
        return self._system_slot[1]

    def with_principle(self, conversation: Conversation, principle: str) -> Conversation:
        """The conversation with ``principle`` injected (unchanged when the principle is empty)."""
        if not principle.strip():
            return conversation
        if conversation[0]["role"] == "system":
            system = conversation[0]["content"]
            merged = f"{system}\n\n{principle}" if system else principle
            return [{"role": "system", "content": merged}, *conversation[1:]]
        if self.has_template and self.supports_system:
            default = self.default_system
            merged = f"{default}\n\n{principle}" if default else principle
            return [{"role": "system", "content": merged}, *conversation]
        users = [i for i, message in enumerate(conversation) if message["role"] == "user"]
        if not users:
            raise InvalidSettingError(
                "prompt", "this chat template has no system role: a user message must carry the principle"
            )
        first_user = users[0]
        injected = dict(conversation[first_user], content=f"{principle}\n\n{conversation[first_user]['content']}")
        return [*conversation[:first_user], injected, *conversation[first_user + 1 :]]

    def with_profile(self, conversation: Conversation, profile: str | Mapping[str, float]) -> Conversation:
        """The conversation with PAD's guideline block prepended to the last user message."""
        users = [i for i, message in enumerate(conversation) if message["role"] == "user"]
        if not users:
            raise InvalidSettingError("prompt", "a user profile needs a user message to be prepended to")
        last = users[-1]
        content = PROFILE_TEMPLATE.format(profile=render_profile(profile)) + conversation[last]["content"]
        return [*conversation[:last], dict(conversation[last], content=content), *conversation[last + 1 :]]

    def with_guidance(
        self, conversation: Conversation, principle: str | None, profile: str | Mapping[str, float] | None
    ) -> Conversation:
        """The conversation of the guided rows: principle and/or profile injected."""
        check_text("principle", principle or "")
        if profile is not None:
            check_text("profile", render_profile(profile))
        guided = self.with_principle(conversation, principle or "")
        if profile is None or (isinstance(profile, str) and not profile.strip()):
            return guided
        return self.with_profile(guided, profile)

    def encode(self, conversation: Conversation, plan: AnswerPlan | None = None) -> list[int]:
        """Token ids of the rendered conversation, ready for the next assistant token.

        ``plan``: how tools, past calls, results and a response format are rendered
        (``answer.plan``); without one, past calls and results in the template's tool format.
        """
        plan = plan or AnswerPlan(AnswerSpec(), None)
        if self.has_template:
            conversation, kwargs = plan.render(
                conversation, self.template, supports_system=self.supports_system, default_system=self.default_system
            )
            text = self._render(conversation, **kwargs)
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(conversation) != 1 or conversation[0]["role"] != "user":
            raise InvalidSettingError(
                "prompt", "this model's tokenizer has no chat template: pass a plain string, not messages"
            )
        conversation, _ = plan.render(conversation, None, supports_system=False, default_system="")
        return self.tokenizer(conversation[0]["content"])["input_ids"]

    def stop_token_ids(self, generation_eos: int | Sequence[int] | None) -> list[int]:
        """End-of-sequence ids: the tokenizer's and the generation config's.

        Also the end-of-turn markers the chat template itself writes (``<|im_end|>``, …).
        """
        ids: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        if isinstance(generation_eos, int):
            ids.add(generation_eos)
        elif generation_eos is not None:
            ids.update(generation_eos)
        template = self.tokenizer.chat_template if isinstance(self.tokenizer.chat_template, str) else ""
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[marker] for marker in _END_OF_TURN_MARKERS if marker in template and marker in vocab)
        return sorted(ids)
