"""OpenAI request and response bodies, as pydantic models.

Requests keep unknown top-level fields (``extra="allow"``): that is where OpenAI clients put
``extra_body``, and where the alignment settings (``method``, ``principle``, ``beta``, …)
arrive; the translator checks them against the settings registry. Fields OpenAI defines but
this server cannot honour are declared so that a non-default value is refused by name.

Request fields are validated strictly, as OpenAI's API does: ``"5"``, ``4.0`` or ``true`` is not
an integer, ``"0.5"`` is not a number, ``"yes"`` is not a boolean (an integer is a number).
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

STRICT_REQUEST = ConfigDict(extra="allow", strict=True)
"""Request bodies: unknown fields kept for the translator, declared fields of exactly their JSON type."""


class StreamOptions(BaseModel):
    """``include_usage``: send a last chunk with the token counts (and ``usage: null`` before it)."""

    model_config = STRICT_REQUEST

    include_usage: bool = False


class _Request(BaseModel):
    model_config = STRICT_REQUEST

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: Union[str, list[str], None] = None
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    """Accepted and ignored, as ``user`` is (OpenAI stores it with the completion; this server stores nothing)."""


class ChatMessage(BaseModel):
    """One message; ``content`` is text or a list of text parts. Other keys pass to the core as given."""

    model_config = STRICT_REQUEST

    role: str
    content: Union[str, list[dict[str, Any]], None] = None


class ChatCompletionRequest(_Request):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Union[str, dict[str, Any], None] = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(_Request):
    """``POST /v1/completions``: ``prompt`` is one text or a list of texts (decoded as one batch)."""

    prompt: Union[str, list[str]]
    logprobs: int | None = None
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FunctionCall(BaseModel):
    name: str
    arguments: str
    """The JSON text of the arguments."""


class ChatToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ChatToolCall] | None = None


class ChatChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class FunctionCallDelta(BaseModel):
    name: str | None = None
    arguments: str = ""


class ChatToolCallDelta(BaseModel):
    """A piece of tool call ``index``: ``id``, ``type`` and the name in its first piece, then argument text."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class ChatDelta(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ChatToolCallDelta] | None = None


class ChatChunkChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    delta: ChatDelta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class CompletionChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    text: str
    logprobs: None = None
    finish_reason: str | None


class Completion(BaseModel):
    """A completion, and also each chunk of a streamed one (OpenAI uses the same object for both)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models``; ``methods`` lists the alignment methods this model can decode with."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "aligned-llm"
    max_model_len: int
    methods: list[str]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
