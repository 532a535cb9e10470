"""Bounds on what a JSON schema (a tool's parameters, a response format) may ask of a grammar.

:func:`check_schema` is pure: it reads the schema once, iteratively (no recursion, so no
``RecursionError`` however deep the schema is), and raises ``InvalidSettingError`` naming the
parameter, the place in the schema (a JSON pointer) and what is allowed. It never resolves a
reference and never compiles anything; it runs before any grammar or model work.

The compile times quoted below were measured with xgrammar on the bundled model's tokenizer
(49,152 tokens) on one CPU core.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from enum import Enum
from typing import Any

from aligned_llm.errors import InvalidSettingError

MAX_SCHEMA_DEPTH = 64
"""Most nested JSON containers (objects and arrays) in a schema document, the root being 1.

One level of nested objects costs two (the object's schema and its ``properties`` map), so
this allows about 31 levels of nested objects: three times the 10 levels OpenAI's structured
outputs accept. 32 nested objects compile in 0.04 s; a schema 1,000 levels deep overflows
Python's recursion in every library that walks it (json, pydantic, the grammar compiler)."""

MAX_STRING_LENGTH = 100_000
"""Largest ``minLength``/``maxLength`` of a string, in characters.

A string's characters must all be generated: 100,000 characters already need more tokens than
a 32k-token context window holds at three characters a token; a ``minLength`` of 10⁷ can never
complete within any ``max_new_tokens``."""

MAX_ARRAY_ITEMS = 10_000
"""Largest ``minItems``/``maxItems`` of an array.

Every item costs at least two tokens (the value and a comma), so 10,000 items already fill a
20,000-token answer; ``minItems = maxItems = 10⁹`` can never complete."""

MAX_OBJECT_PROPERTIES = 256
"""Most ``properties`` one object may declare, and the largest ``minProperties``.

Grammar compilation grows faster than linearly with an object's optional properties: 256 compile
in 0.24 s, 1,000 in 3.5 s, 5,000 in minutes. ``minProperties`` asks for that many generated
properties, so it has the same bound."""

MAX_SUBSCHEMAS = 1_000
"""Most schemas in one document (the root, every property, item, ``anyOf`` branch, definition).

Bounds the total size of the grammar, which the per-object bound alone does not (256 objects of
256 properties each); four objects of 250 optional properties compile in 0.8 s."""

MAX_ENUM_VALUES = 1_000
"""Most values one ``enum`` may list: OpenAI's limit for structured outputs. 1,000 values compile in
0.1 s; 5,000 values of 40 characters take 2.4 s, 20,000 values tens of seconds."""

MAX_PATTERN_REPEAT = 1_000
"""Largest count in a ``pattern``'s quantifier ``{n}``, ``{n,}`` or ``{n,m}``.

The grammar spells out each repetition: ``a{1000}`` compiles in 0.1 s, ``a{4000}`` in 1.5 s and
``a{10000}`` in several seconds; ``a{1000000}`` never finishes. Nested quantifiers do not
multiply this cost (``(a{100}){10}`` compiles in 0.01 s), so the bound is per quantifier."""

LENGTH_BOUNDS: dict[str, int] = {
    "minLength": MAX_STRING_LENGTH,
    "maxLength": MAX_STRING_LENGTH,
    "minItems": MAX_ARRAY_ITEMS,
    "maxItems": MAX_ARRAY_ITEMS,
    "minProperties": MAX_OBJECT_PROPERTIES,
}
"""The counting keywords a grammar must honour, each with its largest allowed value."""

REFERENCE_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
"""Keywords whose value points at another schema; only references inside the document are allowed."""

SUBSCHEMA_KEYWORDS = frozenset(
    {"items", "additionalItems", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
     "unevaluatedItems", "unevaluatedProperties", "contentSchema"}
)  # fmt: skip
"""Keywords whose value is one schema (``items`` may also be a list of schemas)."""

SCHEMA_LIST_KEYWORDS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
"""Keywords whose value is a list of schemas."""

SCHEMA_MAP_KEYWORDS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"}
)
"""Keywords whose value maps names (or patterns) to schemas."""

_QUANTIFIER = re.compile(r"\{(\d+)(?:,(\d*))?\}")


class _Kind(Enum):
    """What a node of the schema document is, which decides which of its keys are keywords."""

    SCHEMA = "schema"
    SCHEMA_MAP = "schema map"
    SCHEMA_LIST = "schema list"
    DATA = "data"


def check_schema(schema: Mapping[str, Any], parameter: str, where: str = "") -> None:
    """Raise ``InvalidSettingError(parameter, …)`` when ``schema`` reaches outside itself or exceeds a bound.

    Refused: a ``$ref`` (or ``$dynamicRef``, ``$recursiveRef``) that is not a local ``#`` or
    ``#/…`` reference; nesting deeper than :data:`MAX_SCHEMA_DEPTH`; more than
    :data:`MAX_SUBSCHEMAS` schemas; a counting keyword (:data:`LENGTH_BOUNDS`) that is not a
    non-negative integer or exceeds its bound; a ``pattern`` quantifier above
    :data:`MAX_PATTERN_REPEAT`; an ``enum`` of more than :data:`MAX_ENUM_VALUES` values; an object
    of more than :data:`MAX_OBJECT_PROPERTIES` properties. ``where`` says which schema this is in
    the message (``"the parameters of tool 'f'"``); the default is ``"the schema"``.
    """
    label = where or "the schema"
    if not isinstance(schema, Mapping):
        raise InvalidSettingError(parameter, f"{label} must be a JSON object, got {type(schema).__name__}")
    subschemas = 0
    stack: list[tuple[Any, str, int, _Kind]] = [(schema, "", 1, _Kind.SCHEMA)]
    while stack:
        node, pointer, depth, kind = stack.pop()
        if not isinstance(node, (Mapping, list, tuple)):
            continue
        if depth > MAX_SCHEMA_DEPTH:
            raise _error(parameter, label, pointer, f"nests deeper than {MAX_SCHEMA_DEPTH} objects and arrays")
        if kind is _Kind.SCHEMA and isinstance(node, Mapping):
            subschemas += 1
            if subschemas > MAX_SUBSCHEMAS:
                raise _error(parameter, label, pointer, f"the schema holds more than {MAX_SUBSCHEMAS} schemas")
            _check_keywords(node, parameter, label, pointer)
        stack.extend(_children(node, pointer, depth, kind))


def _children(node: Mapping | Sequence, pointer: str, depth: int, kind: _Kind) -> Iterator[tuple[Any, str, int, _Kind]]:
    """The containers inside ``node``, each with its pointer, depth and kind."""
    items = node.items() if isinstance(node, Mapping) else enumerate(node)
    for key, value in items:
        if isinstance(value, (Mapping, list, tuple)):
            yield value, f"{pointer}/{_escape(str(key))}", depth + 1, _child_kind(kind, key, value)


def _child_kind(kind: _Kind, key: object, value: object) -> _Kind:
    """What the value under ``key`` of a node of ``kind`` is."""
    if kind in (_Kind.SCHEMA_MAP, _Kind.SCHEMA_LIST):
        return _Kind.SCHEMA
    if kind is _Kind.DATA:
        return _Kind.DATA
    if key in SUBSCHEMA_KEYWORDS:
        return _Kind.SCHEMA_LIST if isinstance(value, (list, tuple)) else _Kind.SCHEMA
    if key in SCHEMA_LIST_KEYWORDS:
        return _Kind.SCHEMA_LIST
    if key in SCHEMA_MAP_KEYWORDS:
        return _Kind.SCHEMA_MAP
    return _Kind.DATA


def _check_keywords(node: Mapping[str, Any], parameter: str, label: str, pointer: str) -> None:
    """The checks on one schema's own keywords."""
    for keyword in REFERENCE_KEYWORDS:
        if keyword in node:
            _check_reference(node[keyword], parameter, label, f"{pointer}/{_escape(keyword)}")
    for keyword, bound in LENGTH_BOUNDS.items():
        if keyword in node:
            _check_count(node[keyword], bound, parameter, label, f"{pointer}/{keyword}")
    if "pattern" in node:
        _check_pattern(node["pattern"], parameter, label, f"{pointer}/pattern")
    patterns = node.get("patternProperties")
    if isinstance(patterns, Mapping):
        for pattern in patterns:
            _check_pattern(pattern, parameter, label, f"{pointer}/patternProperties/{_escape(str(pattern))}")
    enum = node.get("enum")
    if isinstance(enum, (list, tuple)) and len(enum) > MAX_ENUM_VALUES:
        raise _error(
            parameter, label, f"{pointer}/enum", f"lists {len(enum)} values; at most {MAX_ENUM_VALUES} are allowed"
        )
    properties = node.get("properties")
    if isinstance(properties, Mapping) and len(properties) > MAX_OBJECT_PROPERTIES:
        raise _error(
            parameter, label, f"{pointer}/properties",
            f"declares {len(properties)} properties; at most {MAX_OBJECT_PROPERTIES} are allowed in one object",
        )  # fmt: skip


def _check_reference(reference: object, parameter: str, label: str, pointer: str) -> None:
    if not isinstance(reference, str) or not (reference == "#" or reference.startswith("#/")):
        raise _error(
            parameter, label, pointer,
            f"{reference!r} is not allowed: only local references ('#' or '#/…', into this schema) are allowed, "
            "never files or URLs",
        )  # fmt: skip


def _check_count(value: object, bound: int, parameter: str, label: str, pointer: str) -> None:
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral or value < 0 or value > bound:
        raise _error(parameter, label, pointer, f"must be an integer from 0 to {bound}, got {value!r}")


def _check_pattern(pattern: object, parameter: str, label: str, pointer: str) -> None:
    if not isinstance(pattern, str):
        raise _error(parameter, label, pointer, f"must be a string (a regular expression), got {pattern!r}")
    for count in _quantifier_counts(pattern):
        if count > MAX_PATTERN_REPEAT:
            raise _error(
                parameter, label, pointer,
                f"{pattern[:80]!r} repeats {count if count < 10**9 else 'a billion or more'} times; "
                f"a quantifier {{n}}, {{n,}} or {{n,m}} may count at most {MAX_PATTERN_REPEAT}",
            )  # fmt: skip


def _quantifier_counts(pattern: str) -> Iterator[int]:
    """The numbers in ``pattern``'s unescaped ``{n}``, ``{n,}`` and ``{n,m}`` quantifiers (10⁹ for longer ones)."""
    index = 0
    while index < len(pattern):
        character = pattern[index]
        if character == "\\":
            index += 2
            continue
        if character == "{":
            match = _QUANTIFIER.match(pattern, index)
            if match:
                for digits in match.groups():
                    if digits:
                        yield int(digits) if len(digits) <= 9 else 10**9
                index = match.end()
                continue
        index += 1


def _escape(key: str) -> str:
    """A key as a JSON pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def _error(parameter: str, label: str, pointer: str, problem: str) -> InvalidSettingError:
    return InvalidSettingError(parameter, f"{label} at {pointer or '/'}: {problem}")
