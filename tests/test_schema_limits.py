"""The schema checker refuses references outside the schema and demands beyond its documented bounds, by name."""

from __future__ import annotations

from typing import Any

import pytest

from aligned_llm.errors import InvalidSettingError
from aligned_llm.schema_limits import (
    MAX_ARRAY_ITEMS,
    MAX_ENUM_VALUES,
    MAX_OBJECT_PROPERTIES,
    MAX_PATTERN_REPEAT,
    MAX_SCHEMA_DEPTH,
    MAX_STRING_LENGTH,
    MAX_SUBSCHEMAS,
    check_schema,
)


def nested(levels: int) -> dict[str, Any]:
    """An object schema ``levels`` objects deep (two JSON containers per level, plus the innermost string)."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def deep_list(depth: int) -> list:
    """``depth`` lists, each the only item of the one around it."""
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def properties(count: int) -> dict[str, Any]:
    return {"type": "object", "properties": {f"p{index}": {"type": "string"} for index in range(count)}}


def string(**keywords: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {"s": {"type": "string", **keywords}}}


REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    ("$ref to a file", {"$ref": "file:///etc/passwd"}, "/$ref", "only local references"),
    ("$ref to a URL", {"properties": {"a": {"$ref": "http://127.0.0.1:9/x.json"}}}, "/properties/a/$ref", "URLs"),
    ("$ref to another document's pointer", {"$ref": "other.json#/a"}, "/$ref", "only local references"),
    ("$ref not a string", {"$ref": 3}, "/$ref", "only local references"),
    ("$ref in an anyOf branch", {"anyOf": [{"type": "null"}, {"$ref": "https://x/y"}]}, "/anyOf/1/$ref", "local"),
    ("$ref in a definition", {"$defs": {"d": {"$ref": "/etc/passwd"}}}, "/$defs/d/$ref", "local"),
    ("$dynamicRef to a URL", {"items": {"$dynamicRef": "http://x#meta"}}, "/items/$dynamicRef", "local"),
    ("1,000 levels deep", nested(1000), "/properties/a" * 32 + ":", f"deeper than {MAX_SCHEMA_DEPTH}"),
    ("deep data in a const", {"const": deep_list(MAX_SCHEMA_DEPTH)}, "/const" + "/0" * 63 + ":", "deeper"),
    ("minLength 10**7", string(minLength=10**7), "/properties/s/minLength", f"0 to {MAX_STRING_LENGTH}"),
    ("maxLength beyond", string(maxLength=MAX_STRING_LENGTH + 1), "/properties/s/maxLength", "got 100001"),
    ("minLength negative", string(minLength=-1), "/properties/s/minLength", "integer from 0"),
    ("minLength a fraction", string(minLength=1.5), "/properties/s/minLength", "integer from 0"),
    ("minLength a string", string(minLength="5"), "/properties/s/minLength", "integer from 0"),
    ("minLength true", string(minLength=True), "/properties/s/minLength", "integer from 0"),
    ("minItems 10**9", {"type": "array", "minItems": 10**9, "maxItems": 10**9}, "/minItems", f"{MAX_ARRAY_ITEMS}"),
    ("maxItems beyond", {"type": "array", "maxItems": MAX_ARRAY_ITEMS + 1}, "/maxItems", f"0 to {MAX_ARRAY_ITEMS}"),
    ("minProperties beyond", {"type": "object", "minProperties": 10**6}, "/minProperties", "0 to 256"),
    ("pattern a{1000000}", string(pattern="a{1000000}"), "/properties/s/pattern", f"at most {MAX_PATTERN_REPEAT}"),
    ("pattern {n,m} upper bound", string(pattern="^[0-9]{1,5000}$"), "/properties/s/pattern", "5000 times"),
    ("pattern {n,} lower bound", string(pattern="x{1001,}"), "/properties/s/pattern", "1001 times"),
    ("pattern with a 40-digit count", string(pattern="a{" + "9" * 40 + "}"), "/properties/s/pattern", "billion"),
    ("pattern not a string", string(pattern=5), "/properties/s/pattern", "regular expression"),
    ("patternProperties key", {"patternProperties": {"^a{5000}$": {}}}, "/patternProperties/^a{5000}$", "5000"),
    ("enum of 1,001 values", {"enum": list(range(MAX_ENUM_VALUES + 1))}, "/enum", "1001 values"),
    ("257 properties", properties(MAX_OBJECT_PROPERTIES + 1), "/properties", "257 properties"),
    ("1,001 schemas", {"anyOf": [{"type": "integer"}] * MAX_SUBSCHEMAS}, "/anyOf/", f"{MAX_SUBSCHEMAS} schemas"),
]


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("local $ref into $defs", {"$defs": {"d": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/d"}}}),
    ("recursive $ref to the root", {"type": "object", "properties": {"child": {"$ref": "#"}}}),
    ("a property named $ref", {"type": "object", "properties": {"$ref": {"type": "string"}}}),
    ("$ref as data in enum and const", {"enum": [{"$ref": "http://x"}], "const": {"$ref": "file:///etc"}}),
    ("$ref under an unknown keyword", {"x-note": {"$ref": "http://example.com"}}),
    ("nested 31 objects deep", nested(31)),
    ("bounds themselves", string(minLength=MAX_STRING_LENGTH, maxLength=MAX_STRING_LENGTH)),
    ("integral float count", string(minLength=3.0)),
    ("array bounds", {"type": "array", "minItems": MAX_ARRAY_ITEMS, "maxItems": MAX_ARRAY_ITEMS}),
    ("minProperties bound", {"type": "object", "minProperties": MAX_OBJECT_PROPERTIES}),
    ("maxProperties is not a demand", {"type": "object", "maxProperties": 10**9}),
    ("pattern at the bound", string(pattern=f"a{{{MAX_PATTERN_REPEAT}}}b{{0,{MAX_PATTERN_REPEAT}}}")),
    ("escaped brace is a literal", string(pattern=r"\{5000000}")),
    ("escaped backslash then quantifier", string(pattern=r"\\{3}")),
    ("nested quantifiers each within the bound", string(pattern="(a{1000}){1000}")),
    ("enum at the bound", {"enum": list(range(MAX_ENUM_VALUES))}),
    ("properties at the bound", properties(MAX_OBJECT_PROPERTIES)),
    ("boolean subschemas", {"type": "object", "properties": {"a": True}, "additionalProperties": False}),
    ("empty schema", {}),
]


@pytest.mark.parametrize(("schema", "pointer", "says"), [case[1:] for case in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_naming_the_parameter_place_and_bound(schema: dict[str, Any], pointer: str, says: str) -> None:
    with pytest.raises(InvalidSettingError) as raised:
        check_schema(schema, "response_format", where="the schema of 'x'")
    assert raised.value.parameter == "response_format"
    message = str(raised.value)
    assert message.startswith("response_format: the schema of 'x' at ")
    assert f" at {pointer}" in message
    assert says in message


@pytest.mark.parametrize("schema", [case[1] for case in ACCEPTED], ids=[case[0] for case in ACCEPTED])
def test_accepted_within_the_bounds(schema: dict[str, Any]) -> None:
    check_schema(schema, "tools")


def test_depth_is_found_without_recursion() -> None:
    """A schema nested far past Python's recursion limit is refused, not a RecursionError."""
    with pytest.raises(InvalidSettingError, match="deeper than"):
        check_schema(nested(100_000), "tools")


def test_default_label_and_root_type() -> None:
    with pytest.raises(InvalidSettingError, match=r"^tools: the schema at /\$ref: "):
        check_schema({"$ref": "http://x"}, "tools")
    with pytest.raises(InvalidSettingError, match="tools: the schema must be a JSON object, got list"):
        check_schema([], "tools")  # type: ignore[arg-type]


def test_pointer_escapes_slash_and_tilde() -> None:
    with pytest.raises(InvalidSettingError, match="at /properties/a~1b~0c/\\$ref"):
        check_schema({"properties": {"a/b~c": {"$ref": "http://x"}}}, "tools")
