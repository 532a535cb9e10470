"""``response_format``: validating it, the instruction it adds to the prompt, and parsing the answer.

Accepted: ``{"type": "json_object"}`` (any JSON object), ``{"type": "json_schema",
"json_schema": {"name", "schema", "strict"?}}``, ``{"type": "text"}`` (no format), or a
pydantic ``BaseModel`` class (the answer is validated into an instance).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aligned_llm.errors import InvalidSettingError

JSON_PROMPT = "Respond only with JSON, on one line, that matches this JSON schema:\n{schema}"
"""The instruction a response format adds to the system message (the grammar enforces it)."""
JSON_OBJECT_PROMPT = "Respond only with a JSON object, on one line."


@dataclass(frozen=True)
class ResponseFormat:
    """A normalised ``response_format``: the JSON schema (``None`` = any object) and the model class."""

    schema: dict[str, Any] | None
    model: Any = None

    @property
    def grammar_schema(self) -> dict[str, Any]:
        """The schema the grammar enforces (``json_object``: any JSON object)."""
        return self.schema if self.schema is not None else {"type": "object"}

    def instruction(self) -> str:
        """The system-prompt section describing the expected answer."""
        if self.schema is None:
            return JSON_OBJECT_PROMPT
        return JSON_PROMPT.format(schema=json.dumps(self.schema, ensure_ascii=False))

    def parse(self, text: str) -> Any:
        """The answer as JSON (or a validated model instance); ``None`` when it does not parse.

        Without a grammar models wrap JSON in prose or code fences: the span from the first
        ``{`` to the last ``}`` is tried too.
        """
        value = _loads(text.strip())
        if value is None and "{" in text and "}" in text:
            value = _loads(text[text.index("{") : text.rindex("}") + 1])
        if value is None:
            return None
        if self.model is None:
            return value
        from pydantic import ValidationError

        try:
            return self.model.model_validate(value)
        except ValidationError:
            return None


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _is_pydantic_model(value: object) -> bool:
    try:
        from pydantic import BaseModel
    except ImportError:  # pragma: no cover - pydantic comes with transformers
        return False
    return isinstance(value, type) and issubclass(value, BaseModel)


def normalize_response_format(value: object) -> ResponseFormat | None:
    """Validate ``response_format``; ``None`` and ``{"type": "text"}`` mean free text."""
    if value is None:
        return None
    if _is_pydantic_model(value):
        return ResponseFormat(_object_schema(value.model_json_schema()), model=value)  # type: ignore[attr-defined]
    allowed = (
        "None, {'type': 'json_object'}, {'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}} "
        "or a pydantic BaseModel class"
    )
    if not isinstance(value, Mapping):
        raise InvalidSettingError("response_format", f"must be {allowed}, got {value!r}")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat(None)
    if kind != "json_schema":
        raise InvalidSettingError(
            "response_format", f"type must be 'text', 'json_object' or 'json_schema', got {kind!r}"
        )
    spec = value.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
        raise InvalidSettingError(
            "response_format", f"json_schema must be {{'name': ..., 'schema': {{...}}}}, got {spec!r}"
        )
    return ResponseFormat(_object_schema(spec["schema"]))


def _object_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(schema))
    except (TypeError, ValueError) as error:
        raise InvalidSettingError("response_format", f"the schema is not JSON: {error}") from None
