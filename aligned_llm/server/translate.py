"""The thin translation between OpenAI's request/response bodies and the core's prompt, settings and results.

A request becomes exactly the keywords of ``AlignedLLM.agenerate``/``astream``: OpenAI fields
with a core setting of the same meaning are passed through, ``max_tokens`` /
``max_completion_tokens`` become ``max_new_tokens``, and every other top-level field must be a
setting of the registry (``aligned_llm.setting_names()``), which the core then checks. Nothing
in a request names a model, a path or code: the model is the server's, fixed at startup.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aligned_llm.prompts import Prompt
from aligned_llm.result import GenerationResult, ToolCallDelta
from aligned_llm.server.errors import bad_request
from aligned_llm.server.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    ChatToolCall,
    ChatToolCallDelta,
    Completion,
    CompletionChoice,
    CompletionRequest,
    FunctionCall,
    FunctionCallDelta,
    Usage,
)
from aligned_llm.settings import setting_names

PASSED_THROUGH = ("stop", "temperature", "top_p", "frequency_penalty", "presence_penalty", "seed")
"""OpenAI fields that are core settings of the same name and meaning, passed on when given."""

CHAT_PASSED_THROUGH = (*PASSED_THROUGH, "tools", "tool_choice", "parallel_tool_calls", "response_format")
"""The chat endpoint also passes the agent fields to the core, which checks them like any setting."""

NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "best_of": (1,),
    "logit_bias": ({},),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "echo": (False,),
    "suffix": ("",),
}
"""OpenAI fields this server does not implement: accepted only unset or at these values, else a 400."""

CHAT_ONLY = ("tools", "tool_choice", "parallel_tool_calls")
"""Chat fields that ``/v1/completions`` refuses by name instead of ignoring them: a tool call needs a chat."""

WHY_NOT: dict[str, str] = {
    "n": "one choice per request is supported: send several requests (they share the engine's batch)",
    "best_of": "one completion per request is supported",
}


@dataclass
class CoreCall:
    """What one request asks of the core: the prompt(s) and the settings, plus how to answer."""

    prompt: Prompt | list[Prompt]
    settings: dict[str, Any]
    rename: dict[str, str]
    """Core parameter names → the request's own names, for error messages."""
    stream: bool
    include_usage: bool
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def method(self) -> str:
        return str(self.settings.get("method", "vanilla"))

    @property
    def trace(self) -> bool:
        return bool(self.settings.get("trace", False))


def chat_call(request: ChatCompletionRequest) -> CoreCall:
    """The core call of a chat completion request, or a 400 naming the field at fault."""
    conversation = [_message(message, index) for index, message in enumerate(request.messages)]
    max_param, max_tokens = "max_tokens", request.max_tokens
    if request.max_completion_tokens is not None:
        max_param, max_tokens = "max_completion_tokens", request.max_completion_tokens
    settings = _settings(request, CHAT_PASSED_THROUGH, max_param, max_tokens)
    if settings.get("response_format") == {"type": "text"}:
        del settings["response_format"]
    rename = {"prompt": "messages", **({"max_new_tokens": max_param} if max_tokens is not None else {})}
    return CoreCall(conversation, settings, rename, request.stream, _usage(request))


def completion_call(request: CompletionRequest) -> CoreCall:
    """The core call of a (legacy) completion request; a list of prompts is decoded as one batch."""
    sent = [name for name in CHAT_ONLY if name in (request.model_extra or {})]
    if sent:
        raise bad_request(
            sent[0], f"{sent[0]}: tools belong to /v1/chat/completions; /v1/completions returns text only"
        )
    prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
    if not prompts:
        raise bad_request("prompt", "prompt: must be a non-empty string or a non-empty list of strings")
    if request.stream and len(prompts) > 1:
        raise bad_request("prompt", "prompt: a stream takes one prompt; without stream a list is decoded as one batch")
    settings = _settings(request, PASSED_THROUGH, "max_tokens", request.max_tokens)
    prompt: Prompt | list[Prompt] = prompts[0] if request.stream else request.prompt
    rename = {"max_new_tokens": "max_tokens"} if request.max_tokens is not None else {}
    return CoreCall(prompt, settings, rename, request.stream, _usage(request))


def _usage(request: ChatCompletionRequest | CompletionRequest) -> bool:
    return bool(request.stream and request.stream_options is not None and request.stream_options.include_usage)


def _message(message: ChatMessage, index: int) -> dict[str, Any]:
    """An OpenAI message as the core reads it: text parts joined, ``developer`` as ``system``."""
    converted = message.model_dump(exclude_none=True)
    if converted["role"] == "developer":
        converted["role"] = "system"
    if isinstance(message.content, list):
        texts = []
        for part_index, part in enumerate(message.content):
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                where = f"messages[{index}].content[{part_index}]"
                raise bad_request(where, f"{where}: only text parts ({{'type': 'text', 'text': …}}) are supported")
            texts.append(part["text"])
        converted["content"] = "\n".join(texts)
    return converted


def _settings(
    request: ChatCompletionRequest | CompletionRequest,
    passed_through: Sequence[str],
    max_param: str,
    max_tokens: int | None,
) -> dict[str, Any]:
    """The core settings of a request; unsupported OpenAI values and unknown extra fields are refused by name."""
    given = request.model_dump(exclude_unset=True)
    for name, neutral in NEUTRAL_VALUES.items():
        value = given.get(name)
        if value is not None and value not in neutral:
            why = WHY_NOT.get(name, f"is not supported by this server (allowed: unset or {neutral[0]!r})")
            raise bad_request(name, f"{name}: {why}")
    extra = dict(request.model_extra or {})
    known = set(setting_names())
    unknown = sorted(name for name in extra if name not in known)
    if unknown:
        raise bad_request(
            unknown[0],
            f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: the fields beyond OpenAI's are the "
            f"alignment settings {', '.join(sorted(known - set(PASSED_THROUGH)))}",
        )
    settings = dict(extra)
    for name in passed_through:
        if given.get(name) is not None:
            settings[name] = given[name]
    if max_tokens is not None:
        if "max_new_tokens" in extra:
            raise bad_request(max_param, f"{max_param}: give {max_param} or max_new_tokens, not both")
        settings["max_new_tokens"] = max_tokens
    return settings


def usage(results: Sequence[GenerationResult]) -> Usage:
    prompt = sum(result.input_tokens for result in results)
    completion = sum(result.output_tokens for result in results)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def choice_extras(call: CoreCall, result: GenerationResult) -> dict[str, Any]:
    """Fields beyond OpenAI's in a choice: the per-token ``trace`` when the request asked for one."""
    if not call.trace or result.trace is None:
        return {}
    return {"trace": [dataclasses.asdict(token) for token in result.trace]}


def assistant_message(result: GenerationResult) -> AssistantMessage:
    """The answer as OpenAI's assistant message: the prose, and the tool calls with their arguments as JSON text."""
    if not result.tool_calls:
        return AssistantMessage(content=result.text)
    calls = [
        ChatToolCall(id=call.id, function=FunctionCall(name=call.name, arguments=json.dumps(call.arguments)))
        for call in result.tool_calls
    ]
    return AssistantMessage(content=result.text or None, tool_calls=calls)


def tool_call_deltas(pieces: Sequence[ToolCallDelta]) -> list[ChatToolCallDelta]:
    """Streamed tool-call pieces in OpenAI's chunk shape."""
    return [
        ChatToolCallDelta(
            index=piece.index,
            id=piece.id,
            type="function" if piece.id is not None else None,
            function=FunctionCallDelta(name=piece.name, arguments=piece.arguments),
        )
        for piece in pieces
    ]


def chat_response(call: CoreCall, model: str, result: GenerationResult) -> ChatCompletion:
    choice = ChatChoice(
        index=0,
        message=assistant_message(result),
        finish_reason=result.finish_reason,
        **choice_extras(call, result),
    )
    return ChatCompletion(
        id=f"chatcmpl-{call.id}", created=call.created, model=model, choices=[choice], usage=usage([result])
    )


def completion_response(call: CoreCall, model: str, results: Sequence[GenerationResult]) -> Completion:
    choices = [
        CompletionChoice(
            index=index, text=result.text, finish_reason=result.finish_reason, **choice_extras(call, result)
        )
        for index, result in enumerate(results)
    ]
    return Completion(id=f"cmpl-{call.id}", created=call.created, model=model, choices=choices, usage=usage(results))
