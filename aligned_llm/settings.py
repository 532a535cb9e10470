"""Decoding settings: validated in one place, before any model work starts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from aligned_llm.constraints import DEFAULT_CONSTRAINED_ALIGNMENT, OutputSpec, output_spec
from aligned_llm.errors import InvalidSettingError
from aligned_llm.methods import AAD, METHODS, OPAD, PAD, DecodingMethod, LinearAlignment, Vanilla
from aligned_llm.methods.opad import OpadWindow

DEFAULT_MAX_NEW_TOKENS = 512
Profile = Union[str, Mapping[str, float]]


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidSettingError(name, f"must be a number, got {value!r}")
    return float(value)


def _stop_strings(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    strings = (stop,) if isinstance(stop, str) else tuple(stop)
    for string in strings:
        if not isinstance(string, str) or not string:
            raise InvalidSettingError("stop", f"must be non-empty strings, got {string!r}")
    return strings


def _check_profile(profile: object) -> None:
    if profile is None or isinstance(profile, str):
        return
    if not isinstance(profile, Mapping) or not profile:
        raise InvalidSettingError("profile", f"must be text or a non-empty {{dimension: weight}} dict, got {profile!r}")
    for dimension, weight in profile.items():
        if not isinstance(dimension, str) or not dimension.strip():
            raise InvalidSettingError("profile", f"dimension names must be non-empty strings, got {dimension!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < math.inf:
            raise InvalidSettingError(
                "profile", f"weight of {dimension!r} must be a finite number >= 0, got {weight!r}"
            )
    if not any(profile.values()):
        raise InvalidSettingError("profile", "at least one dimension needs a weight > 0")


@dataclass(frozen=True)
class DecodeSettings:
    """Everything that decides how a prompt is decoded; invalid values raise on construction.

    ``method`` is a method name (``"vanilla"``, ``"opad"``, ``"linear"``, ``"pad"``,
    ``"aad"``) or a ready ``DecodingMethod``. ``beta`` is OPAD's strength (> 0) or PAD's
    reward weight (>= 0); ``opad_window`` configures OPAD, ``rho`` the linear baseline, ``k``
    and ``pad_base`` PAD, ``alpha`` AAD. ``principle`` and ``profile`` are the guidance
    rendered into the guided rows (both may be given).

    Tool calling and structured output (docs/tools.md): ``tools``, ``tool_choice``,
    ``parallel_tool_calls``, ``response_format``, ``constrained`` (grammar on or off) and
    ``constrained_alignment`` (what the method does inside a tool call or JSON answer);
    validated by ``constraints.output_spec`` into ``output``.
    """

    method: str | DecodingMethod = "vanilla"
    principle: str | None = None
    profile: Profile | None = None
    beta: float = 1.0
    opad_window: OpadWindow = "reference"
    rho: float = 2.0
    k: int = 10
    pad_base: str = "profiled"
    alpha: float = 0.1
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    # tool calling and structured output
    tools: Any = None
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    response_format: Any = None
    constrained: bool = True
    constrained_alignment: str = DEFAULT_CONSTRAINED_ALIGNMENT
    output: OutputSpec = field(init=False, repr=False, compare=False, default=OutputSpec())

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", _stop_strings(self.stop))
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise InvalidSettingError("max_new_tokens", f"must be an integer >= 1, got {self.max_new_tokens!r}")
        temperature = _number("temperature", self.temperature)
        if not 0 <= temperature < math.inf:
            raise InvalidSettingError("temperature", f"must be >= 0 (0 = greedy), got {self.temperature!r}")
        top_p = _number("top_p", self.top_p)
        if not 0 < top_p <= 1:
            raise InvalidSettingError("top_p", f"must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise InvalidSettingError("seed", f"must be None or an integer >= 0, got {self.seed!r}")
        if self.principle is not None and not isinstance(self.principle, str):
            raise InvalidSettingError("principle", f"must be a string, got {type(self.principle).__name__}")
        _check_profile(self.profile)
        _number("beta", self.beta)
        self.method_for()
        output = output_spec(
            self.tools, self.tool_choice, self.parallel_tool_calls, self.response_format, self.constrained,
            self.constrained_alignment,
        )  # fmt: skip
        object.__setattr__(self, "output", output)

    def method_for(self, *, aad_pair: str = "adapter", pad_reward: str = "zero-shot") -> DecodingMethod:
        """The configured method for a model setup (which AAD pair, which PersRM is loaded)."""
        method = self._build(aad_pair, pad_reward)
        required = getattr(method, "requires", None)
        if required is not None and getattr(self, required) is None:
            raise InvalidSettingError(
                required, f"method {method.name!r} contrasts contexts with and without a {required}: give one"
            )
        return method

    def _build(self, aad_pair: str, pad_reward: str) -> DecodingMethod:
        if isinstance(self.method, DecodingMethod):
            return self.method
        if self.method == OPAD.name:
            return OPAD(beta=self.beta, window=self.opad_window)
        if self.method == LinearAlignment.name:
            return LinearAlignment(rho=self.rho)
        if self.method == PAD.name:
            return PAD(beta=self.beta, k=self.k, reward=pad_reward, base=self.pad_base)
        if self.method == AAD.name:
            return AAD(alpha=self.alpha, pair=aad_pair)
        if self.method == Vanilla.name:
            return Vanilla()
        raise InvalidSettingError(
            "method", f"must be one of {sorted(METHODS)} or a DecodingMethod, got {self.method!r}"
        )
