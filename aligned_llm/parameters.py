"""One decoding setting, declared once: its name, type, default, allowed values and help.

Methods declare their parameters with :class:`Parameter`; the common settings (sampling,
stopping, guidance) are declared the same way in ``settings.py``. Every surface (Python, CLI,
tuning panel, LangChain, LlamaIndex) reads these declarations, so a setting is checked and
described the same everywhere.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from aligned_llm.errors import InvalidSettingError

Check = Callable[[Any], Any]
"""A custom check: returns the value to use (normalised) or raises ``InvalidSettingError``."""


@dataclass(frozen=True)
class Parameter:
    """A named setting with its type, default, allowed values and a one-line help.

    ``type`` is ``float``, ``int``, ``bool`` or ``str``. Numbers accept any real (integral for
    ``int``) value, numpy scalars included, never ``bool`` or NaN, and must lie within
    ``minimum``/``maximum`` (exclusive when ``exclusive_minimum``/``exclusive_maximum``);
    bounds left as ``None`` still require a finite value. ``choices`` lists the allowed values
    instead. ``check`` replaces the built-in check for structured values (stop strings, user
    profiles). ``optional`` allows ``None``. ``ui_range`` is the range a slider offers.
    ``annotation`` is the Python type of a structured value (what a typed field declares) when
    ``type`` alone does not say it, e.g. ``str | dict[str, float]`` for a user profile.
    """

    name: str
    type: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple[Any, ...] | None = None
    optional: bool = False
    check: Check | None = None
    ui_range: tuple[float, float] | None = None
    annotation: Any = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"a parameter name must be a Python identifier, got {self.name!r}")
        if self.type not in (float, int, bool, str) and self.check is None:
            raise ValueError(f"parameter {self.name!r}: type must be float, int, bool or str, or give a check")

    def validate(self, value: Any) -> Any:
        """The value to use, or an ``InvalidSettingError`` naming this parameter and what is allowed."""
        if value is None and (self.optional or self.default is None):
            return None
        if self.check is not None:
            return self.check(value)
        if self.choices is not None:
            for choice in self.choices:
                if value == choice and type(value) is type(choice):
                    return choice
            raise self._error(value)
        if self.type is bool:
            if not isinstance(value, bool):
                raise self._error(value)
            return value
        if self.type is str:
            if not isinstance(value, str):
                raise self._error(value)
            return value
        return self._number(value)

    def parse(self, text: str) -> Any:
        """A value from command-line text (``choices`` by their spelling), then validated."""
        return self.validate(self.convert(text))

    def convert(self, text: str) -> Any:
        """Command-line text as this parameter's type (``choices`` by their spelling), not yet range-checked."""
        if self.choices is not None:
            for choice in self.choices:
                if text == str(choice):
                    return choice
            raise self._error(text)
        if self.type is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise self._error(text)
            return lowered in ("true", "1", "yes")
        if self.type in (int, float):
            try:
                return self.type(text)
            except ValueError:
                raise self._error(text) from None
        return text

    @property
    def value_type(self) -> Any:
        """The type a typed field of this setting declares: ``annotation``, the choices (a ``Literal``) or ``type``."""
        if self.annotation is not None:
            return self.annotation
        if self.choices is not None:
            return Literal[self.choices]
        return self.type

    def bounds(self) -> dict[str, float]:
        """The range as pydantic/annotated-types constraints: ``ge``/``gt`` and ``le``/``lt`` (empty when unbounded)."""
        bounds: dict[str, float] = {}
        if self.minimum is not None:
            bounds["gt" if self.exclusive_minimum else "ge"] = self.minimum
        if self.maximum is not None:
            bounds["lt" if self.exclusive_maximum else "le"] = self.maximum
        return bounds

    def allowed(self) -> str:
        """What the parameter accepts, in words (for errors and help)."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(choice) for choice in self.choices)
        if self.type is bool:
            return "True or False"
        if self.type is str:
            return "a string"
        kind = "an integer" if self.type is int else "a finite number"
        bounds = []
        if self.minimum is not None:
            bounds.append(f"{'>' if self.exclusive_minimum else '>='} {self._bound(self.minimum)}")
        if self.maximum is not None:
            bounds.append(f"{'<' if self.exclusive_maximum else '<='} {self._bound(self.maximum)}")
        return kind + (" " + " and ".join(bounds) if bounds else "")

    def _bound(self, bound: float) -> str:
        return str(int(bound)) if self.type is int else f"{bound:g}"

    def _number(self, value: Any) -> float | int:
        wanted = numbers.Integral if self.type is int else numbers.Real
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise self._error(value)
        number = int(value) if self.type is int else float(value)
        if not math.isfinite(number):
            raise self._error(value)
        if self.minimum is not None and (number < self.minimum or (self.exclusive_minimum and number == self.minimum)):
            raise self._error(value)
        if self.maximum is not None and (number > self.maximum or (self.exclusive_maximum and number == self.maximum)):
            raise self._error(value)
        return number

    def _error(self, value: Any) -> InvalidSettingError:
        return InvalidSettingError(self.name, f"must be {self.allowed()}, got {value!r}")
