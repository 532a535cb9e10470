"""What a generation returns: the text, token counts, why it stopped, and an optional trace."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]


@dataclass(frozen=True)
class ToolCall:
    """One call of a tool the model made: ``arguments`` is the parsed JSON object."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolCallDelta:
    """A streamed piece of tool call ``index``.

    ``id`` and ``name`` are set in the first delta of a call (``None`` after); the
    ``arguments`` fragments of a call concatenate to its JSON arguments text.
    """

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True)
class StreamDelta:
    """One event of ``GenerationStream.deltas()``: prose text and/or tool call pieces."""

    text: str
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass(frozen=True)
class TokenTrace:
    """One generated token as the method saw it (recorded only with ``trace=True``).

    ``logprobs`` maps each context row (e.g. ``"constrained"``, ``"unconstrained"``) to the
    chosen token's log-probability under that row; ``score`` is the method's final score of
    the token; ``signal`` is how far the method moved it (OPAD: the scaled log-ratio term;
    0 for vanilla); ``kl`` is KL(first row ‖ second row) at this step when there are two rows.
    """

    token_id: int
    text: str
    logprobs: dict[str, float]
    score: float
    signal: float
    kl: float | None


@dataclass(frozen=True)
class GenerationResult:
    """The outcome of one prompt.

    ``input_tokens`` counts the prompt tokens of the primary context (the one the user's
    conversation is rendered into, with the principle when there is one); ``output_tokens``
    counts every token the model produced, the end-of-turn token included. ``finish_reason``
    is ``"stop"`` (end-of-turn token or stop string), ``"tool_calls"`` (the answer ended with
    tool calls), ``"length"`` (max_new_tokens reached) or ``"cancelled"``. With tools,
    ``text`` holds the prose only and ``tool_calls`` the calls; with a ``response_format``,
    ``parsed`` holds the parsed JSON (or the validated pydantic instance).
    """

    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: FinishReason
    token_ids: tuple[int, ...] = ()
    method: str = "vanilla"
    trace: list[TokenTrace] | None = field(default=None, repr=False)
    tool_calls: tuple[ToolCall, ...] = ()
    parsed: Any = None
    call_log_odds: float | None = None
    """With tools under ``"auto"`` in the ``generic`` format: the model's log-odds of calling
    against answering at the decision, before ``tool_call_bias`` (it called when their sum was > 0)."""
