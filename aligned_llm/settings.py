"""Decoding settings: validated in one place, before any model work starts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from aligned_llm.errors import InvalidSettingError
from aligned_llm.methods import METHODS, OPAD, DecodingMethod, LinearAlignment, Vanilla
from aligned_llm.methods.opad import OpadWindow, validate_beta

DEFAULT_MAX_NEW_TOKENS = 512


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


@dataclass(frozen=True)
class DecodeSettings:
    """Everything that decides how a prompt is decoded; invalid values raise on construction.

    ``method`` is a method name (``"vanilla"``, ``"opad"``, ``"linear"``) or a ready
    ``DecodingMethod``; ``beta``/``opad_window`` configure OPAD and ``rho`` the linear
    baseline when a name is given.
    """

    method: str | DecodingMethod = "vanilla"
    principle: str | None = None
    beta: float = 1.0
    opad_window: OpadWindow = "reference"
    rho: float = 2.0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    decoding: DecodingMethod = field(init=False, repr=False, compare=False)

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
        validate_beta(self.beta)
        object.__setattr__(self, "decoding", self._build_method())
        if self.principle is None and any(not row.guided for row in self.decoding.rows):
            raise InvalidSettingError(
                "principle", f"method {self.decoding.name!r} contrasts contexts with and without a principle: give one"
            )

    def _build_method(self) -> DecodingMethod:
        if isinstance(self.method, DecodingMethod):
            return self.method
        if self.method == OPAD.name:
            return OPAD(beta=self.beta, window=self.opad_window)
        if self.method == LinearAlignment.name:
            return LinearAlignment(rho=self.rho)
        if self.method == Vanilla.name:
            return Vanilla()
        raise InvalidSettingError(
            "method", f"must be one of {sorted(METHODS)} or a DecodingMethod, got {self.method!r}"
        )
