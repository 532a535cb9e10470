"""The settings every method shares: guidance, length, stopping, sampling and tracing.

Declared with :class:`~aligned_llm.parameters.Parameter` like the methods' own parameters,
so every surface reads them from the same place.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Union

from aligned_llm.answer.formats import TOOL_FORMATS
from aligned_llm.answer.spec import CONSTRAINED_ALIGNMENT as CONSTRAINED_ALIGNMENT_CHOICES
from aligned_llm.answer.spec import (
    DEFAULT_CONSTRAINED_ALIGNMENT,
    check_tool_choice,
    normalize_response_format,
    normalize_tools,
)
from aligned_llm.errors import InvalidSettingError
from aligned_llm.parameters import Parameter

DEFAULT_MAX_NEW_TOKENS = 512
MIN_TEMPERATURE = 1e-4
"""The smallest sampling temperature: below it softmax(score/T) overflows, and it would be greedy anyway."""
MAX_SEED = 2**64 - 1
Profile = Union[str, Mapping[str, float]]


def check_guidance_text(name: str, value: Any) -> str:
    """A principle or text profile: a string."""
    if not isinstance(value, str):
        raise InvalidSettingError(name, f"must be a string, got {type(value).__name__}")
    return value


def check_profile(profile: Any) -> Profile:
    """A user profile: text, or a non-empty ``{dimension: weight}`` dict with finite weights >= 0."""
    if isinstance(profile, str):
        return profile
    if not isinstance(profile, Mapping) or not profile:
        raise InvalidSettingError("profile", f"must be text or a non-empty {{dimension: weight}} dict, got {profile!r}")
    for dimension, weight in profile.items():
        if not isinstance(dimension, str) or not dimension.strip():
            raise InvalidSettingError("profile", f"dimension names must be non-empty strings, got {dimension!r}")
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not 0 <= weight < math.inf:
            raise InvalidSettingError(
                "profile", f"weight of {dimension!r} must be a finite number >= 0, got {weight!r}"
            )
    if not any(profile.values()):
        raise InvalidSettingError("profile", "at least one dimension needs a weight > 0")
    return {dimension: float(weight) for dimension, weight in profile.items()}


def check_stop(stop: Any) -> tuple[str, ...]:
    """Stop strings: ``None``, one string, or a list/tuple of non-empty strings."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        strings: tuple[Any, ...] = (stop,)
    elif isinstance(stop, Sequence):
        strings = tuple(stop)
    else:
        raise InvalidSettingError("stop", f"must be a string or a list of strings, got {type(stop).__name__}")
    for string in strings:
        if not isinstance(string, str) or not string:
            raise InvalidSettingError("stop", f"must be non-empty strings, got {string!r}")
    return strings


def check_temperature(value: Any) -> float:
    """0 (greedy) or a finite number >= ``MIN_TEMPERATURE``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise _temperature_error(value)
    if value != 0 and not value >= MIN_TEMPERATURE:
        raise _temperature_error(value)
    return float(value)


def _temperature_error(value: Any) -> InvalidSettingError:
    return InvalidSettingError(
        "temperature", f"must be 0 (greedy) or a finite number >= {MIN_TEMPERATURE:g} (sampling), got {value!r}"
    )


PRINCIPLE = Parameter(
    "principle", str, None, "the principle to follow, rendered into the guided context",
    check=lambda value: check_guidance_text("principle", value),
)  # fmt: skip
PROFILE = Parameter(
    "profile", str, None, "the user profile (PAD): text or {dimension: weight}",
    check=check_profile, annotation=str | dict[str, float],
)  # fmt: skip
MAX_NEW_TOKENS = Parameter(
    "max_new_tokens", int, DEFAULT_MAX_NEW_TOKENS, "most tokens to generate", minimum=1, ui_range=(1, 512)
)
STOP = Parameter(
    "stop", str, (), "strings that end the text (cut from it)", check=check_stop, annotation=str | Sequence[str]
)
TEMPERATURE = Parameter(
    "temperature", float, 0.0, "0 = greedy; otherwise sampling from softmax(score / T)",
    check=check_temperature, ui_range=(0.0, 2.0),
)  # fmt: skip
TOP_P = Parameter(
    "top_p", float, 1.0, "nucleus mass kept when sampling",
    minimum=0.0, exclusive_minimum=True, maximum=1.0, ui_range=(0.05, 1.0),
)  # fmt: skip
FREQUENCY_PENALTY = Parameter(
    "frequency_penalty", float, 0.0, "subtracted from a token's score once per time it was already generated",
    minimum=-2.0, maximum=2.0,
)  # fmt: skip
PRESENCE_PENALTY = Parameter(
    "presence_penalty", float, 0.0, "subtracted from the score of every token already generated",
    minimum=-2.0, maximum=2.0,
)  # fmt: skip
SEED = Parameter("seed", int, None, "seed for repeatable sampling", minimum=0, maximum=MAX_SEED)
TRACE = Parameter("trace", bool, False, "record per-token log-probs, scores and the method's signal")


TOOLS = Parameter(
    "tools", str, None, "OpenAI-style function tools the model may call (docs/tools.md)",
    check=normalize_tools, annotation=list[dict[str, Any]],
)  # fmt: skip
TOOL_CHOICE = Parameter(
    "tool_choice", str, "auto", "'auto', 'none', 'required', or one tool by name",
    check=check_tool_choice, annotation=str | dict[str, Any],
)  # fmt: skip
PARALLEL_TOOL_CALLS = Parameter(
    "parallel_tool_calls", bool, None,
    "whether an answer may hold several tool calls (None: the format's own default, one call in the generic format)",
    optional=True,
)  # fmt: skip
RESPONSE_FORMAT = Parameter(
    "response_format", str, None, "{'type': 'json_object'}, a json_schema dict or a pydantic class",
    check=normalize_response_format, annotation=dict[str, Any] | type,
)  # fmt: skip
CONSTRAINED = Parameter(
    "constrained", bool, True, "tool calls and JSON answers valid by grammar (False: parse free text)"
)
CONSTRAINED_ALIGNMENT = Parameter(
    "constrained_alignment", str, DEFAULT_CONSTRAINED_ALIGNMENT,
    "what the method does inside a tool call or JSON answer: 'off' (the model's own log-probs) or 'steer'",
    choices=CONSTRAINED_ALIGNMENT_CHOICES,
)  # fmt: skip

TOOL_FORMAT = Parameter(
    "tool_format", str, None, "how tool calls are written: None detects the chat template's own format",
    choices=TOOL_FORMATS, optional=True,
)  # fmt: skip
DEFAULT_TOOL_CALL_BIAS = -0.25
"""Chosen by measurement on BFCL and the agent benchmark (docs/results.md#deciding-to-call)."""
TOOL_CALL_BIAS = Parameter(
    "tool_call_bias", float, DEFAULT_TOOL_CALL_BIAS,
    "log-odds added to calling a tool in the generic format's calibrated decision (higher: calls more often)",
    minimum=-50.0, maximum=50.0, ui_range=(-6.0, 6.0),
)  # fmt: skip

COMMON_PARAMETERS: tuple[Parameter, ...] = (
    PRINCIPLE, PROFILE, MAX_NEW_TOKENS, STOP, TEMPERATURE, TOP_P, FREQUENCY_PENALTY, PRESENCE_PENALTY, SEED, TRACE,
    TOOLS, TOOL_CHOICE, PARALLEL_TOOL_CALLS, RESPONSE_FORMAT, CONSTRAINED, CONSTRAINED_ALIGNMENT, TOOL_FORMAT,
    TOOL_CALL_BIAS,
)  # fmt: skip
"""Every setting that is not a method's own, in the order surfaces list them."""
