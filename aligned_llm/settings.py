"""Decoding settings: every setting given is checked against the registry, before any model work.

A setting is either common (``common_settings.py``) or a parameter a registered method
declares. Unknown names are refused with the list of valid ones; a method's own parameters
are checked by its own declaration; a parameter of another method is still checked (by the
declaration of a method that has it), so a typo'd range never passes silently.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from aligned_llm.answer.grammar import check_compiles
from aligned_llm.answer.spec import AnswerSpec, answer_spec
from aligned_llm.common_settings import COMMON_PARAMETERS, DEFAULT_MAX_NEW_TOKENS, Profile
from aligned_llm.errors import InvalidSettingError
from aligned_llm.methods import DecodingMethod
from aligned_llm.registry import method_class, method_parameters
from aligned_llm.setup import ModelSetup

__all__ = ["DEFAULT_MAX_NEW_TOKENS", "DecodeSettings", "Profile", "check_setting", "setting_names"]


def setting_names() -> list[str]:
    """Every valid setting: ``method``, the common settings, then each registered method parameter."""
    return ["method", *(parameter.name for parameter in COMMON_PARAMETERS), *method_parameters()]


def check_setting(name: str, value: Any) -> Any:
    """One setting on its own (e.g. an integration's field): the value to use, or an error naming it.

    Unlike :class:`DecodeSettings`, nothing is checked across settings (a method's guidance may
    still come per call).
    """
    if name == "method":
        if isinstance(value, DecodingMethod):
            return value
        method_class(value)
        return value
    common = {parameter.name: parameter for parameter in COMMON_PARAMETERS}
    if name in common:
        return common[name].validate(value)
    declared = method_parameters()
    if name not in declared:
        raise InvalidSettingError(name, f"is not a setting; the settings are {', '.join(setting_names())}")
    return _validate_elsewhere(value, declared[name])


class DecodeSettings(Mapping[str, Any]):
    """Everything that decides how a prompt is decoded; invalid values raise on construction.

    Construct it with keywords (``DecodeSettings(method="opad", principle="Be brief.",
    beta=2.0)``); read values as attributes (``settings.beta``) or as a mapping. ``method``
    is a registered method name (``aligned_llm.registry.registered_methods()``) or a ready
    ``DecodingMethod``. Settings not given take the chosen method's defaults (or, for other
    methods' parameters, their declared defaults). Immutable; :meth:`replace` makes a copy.
    """

    __slots__ = ("_given", "_output", "_values")

    def __init__(self, **settings: Any) -> None:
        """Check every setting given; raise ``InvalidSettingError`` naming the first bad one."""
        values = _resolve(settings)
        output = answer_spec(
            values["tools"] or (), values["tool_choice"], values["parallel_tool_calls"], values["response_format"],
            constrained=values["constrained"], alignment=values["constrained_alignment"],
            tool_format=values["tool_format"], tool_call_bias=values["tool_call_bias"],
        )  # fmt: skip
        if output.constrained and not output.is_free_text:
            check_compiles(output)
        object.__setattr__(self, "_values", MappingProxyType(values))
        object.__setattr__(self, "_given", frozenset(settings))
        object.__setattr__(self, "_output", output)

    @property
    def output(self) -> AnswerSpec:
        """What the answer must be (tool calls, JSON), checked together; free text when nothing is set."""
        return self._output

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"DecodeSettings has no setting {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("DecodeSettings is immutable: use replace(...)")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DecodeSettings) and dict(self._values) == dict(other._values)

    def __hash__(self) -> int:
        return hash(repr(sorted(self._values.items())))

    def __repr__(self) -> str:
        given = ", ".join(f"{name}={self._values[name]!r}" for name in self._values if name in self._given)
        return f"DecodeSettings({given})"

    @property
    def given(self) -> frozenset[str]:
        """The names set explicitly (the rest are defaults)."""
        return self._given

    def replace(self, **changes: Any) -> DecodeSettings:
        """A copy with ``changes`` applied (checked like a new one)."""
        return DecodeSettings(**{**{name: self._values[name] for name in self._given}, **changes})

    def method_settings(self) -> dict[str, Any]:
        """The chosen method's own parameters (empty for a ready ``DecodingMethod``)."""
        if isinstance(self.method, DecodingMethod):
            return {}
        return {parameter.name: self._values[parameter.name] for parameter in method_class(self.method).parameters}

    def build_method(self, setup: ModelSetup) -> DecodingMethod:
        """The configured method for the loaded models (its ``build``), or the ready instance given."""
        if isinstance(self.method, DecodingMethod):
            return self.method
        return method_class(self.method).build(self.method_settings(), setup)


def _resolve(given: Mapping[str, Any]) -> dict[str, Any]:
    declared = method_parameters()
    common = {parameter.name: parameter for parameter in COMMON_PARAMETERS}
    for name in given:
        if name != "method" and name not in common and name not in declared:
            raise InvalidSettingError(name, f"is not a setting; the settings are {', '.join(setting_names())}")
    method = given.get("method", "vanilla")
    if isinstance(method, DecodingMethod):
        own: dict[str, Any] = {}
        requires = method.requires
    else:
        cls = method_class(method)
        own = {parameter.name: parameter for parameter in cls.parameters}
        requires = cls.requires
    values: dict[str, Any] = {"method": method}
    for name, parameter in common.items():
        values[name] = parameter.validate(given[name]) if name in given else parameter.validate(parameter.default)
    for name, declarations in declared.items():
        if name in own:
            values[name] = own[name].validate(given.get(name, own[name].default))
        elif name in given:
            values[name] = _validate_elsewhere(given[name], declarations)
        else:
            values[name] = declarations[0][1].default
    if requires is not None:
        _check_guidance(requires, values[requires], method)
    return values


def _validate_elsewhere(value: Any, declarations: list[tuple[str, Any]]) -> Any:
    """A parameter of another method: valid when a method that declares it accepts the value."""
    first_error: InvalidSettingError | None = None
    for _method, parameter in declarations:
        try:
            return parameter.validate(value)
        except InvalidSettingError as error:
            first_error = first_error or error
    assert first_error is not None
    raise first_error


def _check_guidance(requires: str, value: Any, method: str | DecodingMethod) -> None:
    name = method if isinstance(method, str) else method.name
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidSettingError(
            requires,
            f"method {name!r} contrasts contexts with and without a {requires}: give a non-empty {requires}",
        )
