"""Adherence scorers: a user's callable, a built-in checker, or the model-based principle-gain proxy.

A scorer is any callable on the answer's text, or on the text and the prompt as given; it
returns a number (``True``/``False`` count as 1/0) — higher means the principle is followed
better. A sweep probes the scorer on a sample answer before decoding, so a scorer that raises
or returns something else is refused before any model work.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aligned_llm.errors import InvalidSettingError
from aligned_llm.prompts import Prompt

SAMPLE_ANSWER = "Here is a short sample answer, written to check the scorer before decoding."
"""The text a scorer is tried on before any decoding."""


@dataclass(frozen=True)
class PrincipleGain:
    """Model-based adherence proxy: how much more likely the answer is with the principle in the context.

    The mean per-token log-probability of the answer under the plain model with the principle
    (or profile) in the context, minus the same without it. Positive: the guidance makes the
    answer likelier. It needs no checker, so it works for any principle, but it is exactly the
    quantity OPAD's reward steers by, so it favours OPAD and strong guidance; prefer a checker
    for a verifiable principle (``docs/tuning.md`` measures how far the two agree).
    """

    name: str = "principle gain (model)"


@dataclass(frozen=True)
class Adherence:
    """A scorer made uniform: ``score(text, prompt)`` whatever the callable takes."""

    name: str
    function: Callable[..., Any] | None
    takes_prompt: bool = False

    @property
    def is_model_proxy(self) -> bool:
        return self.function is None

    def score(self, text: str, prompt: Prompt) -> float:
        """The scorer's number for one answer; an ``InvalidSettingError`` if it is not a finite real number."""
        assert self.function is not None, "the model proxy is scored by the sweep"
        value = self.function(text, prompt) if self.takes_prompt else self.function(text)
        return as_number(self.name, value)


def as_number(name: str, value: Any) -> float:
    """A scorer's return value as a float; refuses non-numbers, NaN and infinities, naming the scorer."""
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise InvalidSettingError(
            "adherence", f"scorer {name} must return a finite number (or True/False), got {value!r}"
        )
    return float(value)


def adherence_scorer(scorer: Callable[..., Any] | PrincipleGain | None, guided: bool) -> Adherence:
    """The uniform scorer of a sweep's ``adherence`` argument (``None``: the model proxy, which needs guidance)."""
    if scorer is None or isinstance(scorer, PrincipleGain):
        if not guided:
            raise InvalidSettingError(
                "adherence", "the principle-gain proxy needs a principle or profile; pass a scorer or a checker"
            )
        return Adherence((scorer or PrincipleGain()).name, None)
    if not callable(scorer):
        raise InvalidSettingError("adherence", f"must be a callable on the text (or text and prompt), got {scorer!r}")
    return Adherence(_name(scorer), scorer, _takes_prompt(scorer))


def probe(adherence: Adherence, prompt: Prompt) -> None:
    """Run the scorer once on :data:`SAMPLE_ANSWER`: what it raises or returns wrongly is an error now."""
    if adherence.is_model_proxy:
        return
    try:
        adherence.score(SAMPLE_ANSWER, prompt)
    except InvalidSettingError:
        raise
    except Exception as error:
        raise InvalidSettingError(
            "adherence",
            f"scorer {adherence.name} raised {type(error).__name__}: {error} on a sample answer "
            f"({SAMPLE_ANSWER!r}); nothing was decoded",
        ) from error


def _name(scorer: Callable[..., Any]) -> str:
    name = getattr(scorer, "name", None) or getattr(scorer, "__qualname__", None) or type(scorer).__name__
    return repr(name) if isinstance(name, str) else repr(str(name))


def _takes_prompt(scorer: Callable[..., Any]) -> bool:
    """Whether the callable accepts two positional arguments (text, prompt)."""
    try:
        signature = inspect.signature(scorer)
    except (TypeError, ValueError):
        return False
    positional = 0
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            positional += 1
    if positional == 0:
        raise InvalidSettingError("adherence", f"scorer {_name(scorer)} takes no argument; it needs the text")
    return positional >= 2
