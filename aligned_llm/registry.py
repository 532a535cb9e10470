"""The method registry: method names → ``DecodingMethod`` classes, and their parameters.

Built-in methods register themselves exactly as a user's method does, with
:func:`register_method`; every surface (Python, CLI, tuning panel, LangChain, LlamaIndex)
reads the registry, so a registered method works by name everywhere. Surfaces that hold a
field per setting read :func:`setting_fields` (each setting's type, default, range and help)
and subscribe with :func:`on_register` to hear of methods registered later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from aligned_llm.errors import InvalidSettingError
from aligned_llm.methods.base import DecodingMethod
from aligned_llm.parameters import Parameter

MethodClass = TypeVar("MethodClass", bound=type[DecodingMethod])
Listener = Callable[[type[DecodingMethod]], None]

_METHODS: dict[str, type[DecodingMethod]] = {}
_LISTENERS: list[Listener] = []


def _reserved_names() -> frozenset[str]:
    """The common settings' names (and ``method``), which no method parameter may take."""
    from aligned_llm.common_settings import COMMON_PARAMETERS

    return frozenset({"method", *(parameter.name for parameter in COMMON_PARAMETERS)})


@overload
def register_method(method: MethodClass, *, replace: bool = False) -> MethodClass: ...


@overload
def register_method(method: None = None, *, replace: bool = False) -> Callable[[MethodClass], MethodClass]: ...


def register_method(
    method: MethodClass | None = None, *, replace: bool = False
) -> MethodClass | Callable[[MethodClass], MethodClass]:
    """Make a ``DecodingMethod`` subclass usable by its ``name`` on every surface.

    Use as ``register_method(MyMethod)`` or as the ``@register_method`` decorator. The class
    declares ``name``, its ``parameters`` (each a :class:`Parameter`) and, when it needs
    guidance, ``requires``; ``build`` makes an instance from the settings and the loaded
    models. A name already taken raises unless ``replace=True``.
    """

    def register(cls: MethodClass) -> MethodClass:
        _check_declaration(cls, replace)
        _METHODS[cls.name] = cls
        for listener in list(_LISTENERS):
            listener(cls)
        return cls

    return register if method is None else register(method)


def method_class(name: str) -> type[DecodingMethod]:
    """The method registered as ``name``, or an error listing the registered names."""
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise InvalidSettingError(
            "method", f"must be one of {', '.join(_METHODS)} or a DecodingMethod, got {name!r}"
        ) from None


def registered_methods() -> dict[str, type[DecodingMethod]]:
    """Every registered method by name, in registration order."""
    return dict(_METHODS)


def method_parameters() -> dict[str, list[tuple[str, Parameter]]]:
    """Every method parameter by name, with each ``(method name, declaration)`` that declares it."""
    declared: dict[str, list[tuple[str, Parameter]]] = {}
    for name, cls in _METHODS.items():
        for parameter in cls.parameters:
            declared.setdefault(parameter.name, []).append((name, parameter))
    return declared


@dataclass(frozen=True)
class SettingField:
    """One setting as a typed field, for a surface that declares a field per setting (LangChain, LlamaIndex).

    ``value_type`` is the type of a value (``float``, ``int``, a ``Literal`` of the choices, …);
    ``bounds`` its range as ``ge``/``gt``/``le``/``lt`` (for a parameter several methods declare,
    the loosest range any of them allows: each call is still checked by the chosen method's own);
    ``default`` the library's default (of the first method that declares it); ``description``
    the help, per method for a method parameter.
    """

    name: str
    value_type: Any
    default: Any
    description: str
    bounds: dict[str, float]


def setting_fields() -> dict[str, SettingField]:
    """Every setting (``method``, the common settings, then each method parameter) as a typed field declaration."""
    from aligned_llm.common_settings import COMMON_PARAMETERS

    method_help = f"a registered method ({', '.join(_METHODS)}) or a DecodingMethod instance"
    fields = {"method": SettingField("method", str | DecodingMethod, "vanilla", method_help, {})}
    for parameter in COMMON_PARAMETERS:
        fields[parameter.name] = SettingField(
            parameter.name, parameter.value_type, parameter.default, parameter.help, parameter.bounds()
        )
    for name, declarations in method_parameters().items():
        parameters = [parameter for _method, parameter in declarations]
        description = "; ".join(
            f"{method}: {parameter.help} (default {parameter.default!r})" for method, parameter in declarations
        )
        fields[name] = SettingField(
            name, parameters[0].value_type, parameters[0].default, description, _loosest_bounds(parameters)
        )
    return fields


def _loosest_bounds(parameters: list[Parameter]) -> dict[str, float]:
    """Each side that every declaration bounds, as loose as the loosest of them (exclusive only if all are)."""
    each = [parameter.bounds() for parameter in parameters]
    bounds: dict[str, float] = {}
    for inclusive, exclusive, loosest in (("ge", "gt", min), ("le", "lt", max)):
        sides = [(bound[inclusive], False) if inclusive in bound else (bound.get(exclusive), True) for bound in each]
        if any(value is None for value, _ in sides):
            continue
        value = loosest(value for value, _ in sides)
        only_exclusive = all(is_exclusive for side, is_exclusive in sides if side == value)
        bounds[exclusive if only_exclusive else inclusive] = value
    return bounds


def on_register(listener: Listener) -> None:
    """Call ``listener(cls)`` for every method registered from now on."""
    _LISTENERS.append(listener)


def _check_declaration(cls: type[DecodingMethod], replace: bool) -> None:
    if not (isinstance(cls, type) and issubclass(cls, DecodingMethod)):
        raise TypeError(f"register_method takes a DecodingMethod subclass, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"{cls.__name__} needs a class attribute `name` (a non-empty string)")
    if name in _METHODS and _METHODS[name] is not cls and not replace:
        raise ValueError(f"a method named {name!r} is already registered ({_METHODS[name].__name__}); replace=True")
    if cls.requires not in (None, "principle", "profile"):
        raise TypeError(f"{cls.__name__}.requires must be None, 'principle' or 'profile', got {cls.requires!r}")
    seen: set[str] = set()
    for parameter in cls.parameters:
        if not isinstance(parameter, Parameter):
            raise TypeError(f"{cls.__name__}.parameters must hold Parameter declarations, got {parameter!r}")
        if parameter.name in _reserved_names() or parameter.name in seen:
            raise ValueError(f"{cls.__name__}: parameter name {parameter.name!r} is reserved or repeated")
        seen.add(parameter.name)
        for other_method, other in method_parameters().get(parameter.name, []):
            if other_method != name and (other.type, other.choices) != (parameter.type, parameter.choices):
                raise ValueError(
                    f"{cls.__name__}: parameter {parameter.name!r} is declared by {other_method!r} with another "
                    "type or choices; one name must mean one kind of value on every surface"
                )


@contextmanager
def registered_temporarily(*methods: type[DecodingMethod], replace: bool = False) -> Iterator[None]:
    """Register ``methods`` for the ``with`` block only (a test's methods leave no trace in the session).

    On leaving the block each name goes back to what it was: unregistered, or the class it
    replaced (``replace=True``). Fields that surfaces added for the methods' parameters stay.
    """
    before = dict(_METHODS)
    try:
        for method in methods:
            register_method(method, replace=replace)
        yield
    finally:
        for method in methods:
            if method.name in before:
                _METHODS[method.name] = before[method.name]
            else:
                _METHODS.pop(method.name, None)
