"""The grid of a sweep: settings to try, each value checked by its parameter's declaration.

A grid maps parameter names to the values to try (``{"beta": [0.5, 1, 2], "k": [5, 10]}``);
its points are every combination, in the order given. A name must be a parameter of the
swept method or a sweepable common setting (sampling, length); every value is checked by the
parameter's own :meth:`~aligned_llm.parameters.Parameter.validate`, so a bad value is an
:class:`~aligned_llm.errors.InvalidSettingError` naming the parameter, before any decoding.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aligned_llm.common_settings import COMMON_PARAMETERS
from aligned_llm.errors import InvalidSettingError
from aligned_llm.parameters import Parameter
from aligned_llm.registry import method_class

SWEEPABLE_COMMON = ("temperature", "top_p", "max_new_tokens", "frequency_penalty", "presence_penalty", "seed")
"""Common settings a grid may vary besides the method's own parameters."""

Grid = Mapping[str, Iterable[Any]]
"""Parameter name → the values to try."""

SYMBOLS: dict[str, str] = {"beta": "β", "rho": "ρ", "alpha": "α"}
"""Greek letters for point labels; other parameters show their name."""


@dataclass(frozen=True)
class SweepPoint:
    """One setting of a sweep: the method, the values it sets, and a short label for plots and lists.

    ``kind`` is ``"grid"`` for a grid point, or the baseline it is (``"default"``, ``"direct"``,
    ``"vanilla"``). ``settings`` are the decoding settings of the point beyond the shared ones.
    """

    index: int
    method: str
    values: dict[str, Any] = field(default_factory=dict)
    kind: str = "grid"
    guided: bool = True

    @property
    def label(self) -> str:
        """``opad β=0.5``, ``direct prompting``, ``vanilla``, ``opad (defaults)``."""
        if self.kind == "direct":
            return "direct prompting"
        if self.kind == "vanilla":
            return "vanilla"
        if self.kind == "default":
            return f"{self.method} (defaults)"
        shown = " ".join(f"{SYMBOLS.get(name, name)}={_short(value)}" for name, value in self.values.items())
        return f"{self.method} {shown}".strip()

    @property
    def settings(self) -> dict[str, Any]:
        """The settings this point adds to the shared ones: its method and its values."""
        return {"method": self.method, **self.values}


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def sweepable_parameters(method: str) -> dict[str, Parameter]:
    """The parameters a grid over ``method`` may vary: the method's own, then the sweepable common settings."""
    parameters = {parameter.name: parameter for parameter in method_class(method).parameters}
    for parameter in COMMON_PARAMETERS:
        if parameter.name in SWEEPABLE_COMMON:
            parameters.setdefault(parameter.name, parameter)
    return parameters


def grid_points(method: str, grid: Grid) -> list[SweepPoint]:
    """Every combination of the grid's values, each checked by its parameter; errors name the parameter.

    An empty grid, a name the method does not read, a list of no values, a duplicated value
    or a value out of its parameter's range is an ``InvalidSettingError``.
    """
    allowed = sweepable_parameters(method)
    if not isinstance(grid, Mapping) or not grid:
        raise InvalidSettingError(
            "grid", f"is empty; give values to try, e.g. {{{next(iter(allowed), 'beta')!r}: [0.5, 1.0, 2.0]}}"
        )
    axes: list[list[tuple[str, Any]]] = []
    for name, values in grid.items():
        if name not in allowed:
            raise InvalidSettingError(
                name, f"is not a parameter of method {method!r}; a grid over it may vary {', '.join(allowed)}"
            )
        checked = _checked_values(allowed[name], values)
        axes.append([(name, value) for value in checked])
    return [SweepPoint(index, method, dict(combination)) for index, combination in enumerate(itertools.product(*axes))]


def _checked_values(parameter: Parameter, values: Iterable[Any]) -> list[Any]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise InvalidSettingError(
            parameter.name, f"a grid needs a list of values to try, got {values!r}; e.g. [{parameter.default!r}]"
        )
    given: Sequence[Any] = list(values)
    if not given:
        raise InvalidSettingError(parameter.name, "has no values to try: the grid is empty")
    checked = []
    for value in given:
        try:
            valid = parameter.validate(value)
        except InvalidSettingError as error:
            message = str(error).split(": ", 1)[-1]
            raise InvalidSettingError(parameter.name, f"grid value {value!r} is refused: {message}") from None
        if valid in checked:
            raise InvalidSettingError(parameter.name, f"grid value {value!r} is given twice")
        checked.append(valid)
    return checked
