"""Berkeley Function Calling Leaderboard data and AST checker, read from the ``bfcl-eval`` wheel by path.

The wheel (``bfcl-eval==2026.3.23``, installed ``--no-deps`` by the Makefile) ships the test cases
as JSON lines (``bfcl_eval/data/BFCL_v4_<category>.json``, ``possible_answer/`` beside them) and
the checker BFCL scores its AST categories with (``eval_checker/ast_eval/ast_checker.py``).
Importing ``bfcl_eval`` whole pulls every provider SDK (anthropic, openai, cohere, …); the
checker itself needs only one name from that chain, ``MODEL_CONFIG_MAPPING``, to ask whether a
model's tool names had their dots replaced. So the checker is loaded by path with that one module
stood in for (``underscore_to_dot=True``, as for every function-calling model BFCL runs), and
BFCL's own code does the scoring.

BFCL writes its parameter types in its own dialect (``"dict"``, ``"float"``, ``"tuple"``,
``"any"``, Java/JavaScript casing); :func:`openai_tool` turns a BFCL function into the
OpenAI-style tool a user would write, and adds the description hints BFCL's own harness adds.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

PACKAGE = "bfcl-eval"
CATEGORIES = ("simple_python", "multiple", "parallel", "irrelevance")
MODEL_NAME = "aligned-llm"
"""The model name handed to BFCL's checker; it only looks up ``underscore_to_dot`` under it."""

JSON_TYPES: dict[str, str | None] = {
    "string": "string", "str": "string", "char": "string",
    "integer": "integer", "int": "integer", "long": "integer", "short": "integer", "byte": "integer",
    "bigint": "integer",
    "float": "number", "double": "number", "number": "number",
    "boolean": "boolean", "bool": "boolean",
    "array": "array", "list": "array", "tuple": "array", "arraylist": "array", "queue": "array",
    "stack": "array", "set": "array",
    "dict": "object", "object": "object", "hashmap": "object", "hashtable": "object",
    "any": None,
}  # fmt: skip
"""BFCL's type names (lower-cased) → JSON Schema types; ``None``: no type constraint."""

PYTHON_HINT = " Note that the provided function is in Python 3 syntax."
"""What BFCL's harness appends to every function description of a Python category."""
FLOAT_HINT = " This is a float type value."
"""What BFCL's harness appends to a ``"float"`` parameter's description when it converts to OpenAI tools."""


def _data_dir() -> Path:
    try:
        files = distribution(PACKAGE).files or []
    except PackageNotFoundError:
        raise RuntimeError(f"the BFCL data needs `pip install --no-deps {PACKAGE}` (make does it)") from None
    marker = next((f for f in files if str(f).endswith("bfcl_eval/data/BFCL_v4_simple_python.json")), None)
    if marker is None:
        raise RuntimeError(f"the installed {PACKAGE} has no bfcl_eval/data/BFCL_v4_simple_python.json")
    return Path(str(marker.locate())).parent


def _read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def json_schema(node: dict[str, Any], *, hints: bool = True) -> dict[str, Any]:
    """One BFCL parameter schema in JSON Schema: types renamed, recursing into properties and items.

    ``hints`` adds BFCL's float note to float descriptions. A type BFCL does not use raises.
    """
    out = {key: value for key, value in node.items() if key not in ("type", "properties", "items")}
    if "type" in node:
        name = node["type"]
        if not isinstance(name, str) or name.lower() not in JSON_TYPES:
            raise ValueError(f"unknown BFCL type {name!r}; known: {', '.join(sorted(JSON_TYPES))}")
        converted = JSON_TYPES[name.lower()]
        if converted is not None:
            out["type"] = converted
        if hints and name.lower() == "float" and isinstance(out.get("description"), str):
            out["description"] += FLOAT_HINT
    if isinstance(node.get("properties"), dict):
        out["properties"] = {key: json_schema(value, hints=hints) for key, value in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        out["items"] = json_schema(node["items"], hints=hints)
    if "required" in out and not isinstance(out["required"], list):
        del out["required"]  # JSON Schema's `required` is a list of names; anything else is not a constraint
    return out


def tool_name(name: str) -> str:
    """The tool name a user would give an OpenAI-style API: dots are not allowed there, so ``_`` (as BFCL does)."""
    return name.replace(".", "_")


def openai_tool(function: dict[str, Any], *, hints: bool = True) -> dict[str, Any]:
    """A BFCL function as an OpenAI-style tool: ``{"type": "function", "function": {name, description, parameters}}``.

    ``hints`` appends the notes BFCL's own harness adds (Python 3 syntax, float values), so the
    model reads what BFCL's function-calling models read.
    """
    description = function.get("description", "") + (PYTHON_HINT if hints else "")
    parameters = json_schema(function["parameters"], hints=hints)
    parameters["type"] = "object"
    return {
        "type": "function",
        "function": {"name": tool_name(function["name"]), "description": description, "parameters": parameters},
    }


@dataclass(frozen=True)
class Case:
    """One BFCL test case: the conversation, its functions (BFCL's and as tools), the answers (None: irrelevance)."""

    id: str
    category: str
    messages: tuple[dict[str, str], ...]
    functions: tuple[dict[str, Any], ...]
    tools: tuple[dict[str, Any], ...]
    possible_answer: tuple[dict[str, Any], ...] | None


@cache
def load_category(category: str) -> tuple[Case, ...]:
    """Every case of one category, in BFCL's order (ids checked against the possible answers)."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown BFCL category {category!r}; known: {', '.join(CATEGORIES)}")
    folder = _data_dir()
    entries = _read_lines(folder / f"BFCL_v4_{category}.json")
    answers: dict[str, Any] = {}
    if category != "irrelevance":
        rows = _read_lines(folder / "possible_answer" / f"BFCL_v4_{category}.json")
        answers = {row["id"]: row["ground_truth"] for row in rows}
        if set(answers) != {entry["id"] for entry in entries}:
            raise RuntimeError(f"BFCL {category}: the questions and possible answers name different cases")
    cases = []
    for entry in entries:
        if len(entry["question"]) != 1:
            raise RuntimeError(f"BFCL {entry['id']}: expected a single-turn case")
        tools = tuple(openai_tool(function) for function in entry["function"])
        if len({tool["function"]["name"] for tool in tools}) != len(tools):
            raise RuntimeError(f"BFCL {entry['id']}: two functions share a tool name once dots become underscores")
        cases.append(Case(
            id=entry["id"], category=category, messages=tuple(entry["question"][0]),
            functions=tuple(entry["function"]), tools=tools,
            possible_answer=tuple(answers[entry["id"]]) if answers else None,
        ))  # fmt: skip
    return tuple(cases)


@cache
def ast_checker_module() -> ModuleType:
    """BFCL's ``ast_checker.py``, loaded by path with its one heavy import stood in for (see the module docstring)."""
    folder = _data_dir().parent / "eval_checker" / "ast_eval"
    stub_name = "bfcl_eval.constants.model_config"
    stub = ModuleType(stub_name)
    stub.MODEL_CONFIG_MAPPING = {MODEL_NAME: SimpleNamespace(underscore_to_dot=True)}  # type: ignore[attr-defined]
    previous = sys.modules.get(stub_name)
    sys.modules[stub_name] = stub
    try:
        spec = importlib.util.spec_from_file_location("bfcl_ast_checker", folder / "ast_checker.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if previous is None:
            del sys.modules[stub_name]
        else:
            sys.modules[stub_name] = previous
    return module


def bfcl_output(calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, dict[str, Any]]]:
    """Tool calls as BFCL's decoder hands them to its checker: ``[{name: arguments}, …]``."""
    return [{name: arguments} for name, arguments in calls]


def ast_correct(case: Case, calls: list[tuple[str, dict[str, Any]]]) -> bool:
    """BFCL's verdict on one answer: for ``irrelevance``, that it makes no call; else BFCL's AST checker."""
    if case.category == "irrelevance":
        return not calls
    if not calls:
        return False
    checker = ast_checker_module()
    result = checker.ast_checker(
        list(case.functions), bfcl_output(calls), list(case.possible_answer or ()),
        checker.Language.PYTHON, case.category, MODEL_NAME,
    )  # fmt: skip
    return bool(result["valid"])


def _first_values(answer: dict[str, list[Any]]) -> dict[str, Any]:
    """One argument dict from a BFCL possible answer: the first allowed value of each ("" = may be left out)."""
    arguments = {}
    for name, allowed in answer.items():
        values = [value for value in allowed if value != ""]
        if not values:
            continue
        value = values[0]
        if isinstance(value, dict):
            value = _first_values(value) if all(isinstance(v, list) for v in value.values()) else value
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            value = [_first_values(v) if all(isinstance(x, list) for x in v.values()) else v for v in value]
        arguments[name] = value
    return arguments


def reference_calls(case: Case) -> list[tuple[str, dict[str, Any]]]:
    """The ground truth as tool calls (tool names as the model sees them): the first allowed value of every argument."""
    if case.possible_answer is None:
        return []
    return [(tool_name(name), _first_values(arguments)) for answer in case.possible_answer
            for name, arguments in answer.items()]  # fmt: skip


def schema_validator(case: Case) -> Callable[[str, dict[str, Any]], str | None]:
    """A check for one call against this case's tools: ``None`` if valid, else why not (unknown tool, schema error)."""
    from jsonschema import Draft202012Validator

    validators = {tool["function"]["name"]: Draft202012Validator(tool["function"]["parameters"]) for tool in case.tools}

    def check(name: str, arguments: dict[str, Any]) -> str | None:
        if name not in validators:
            return f"unknown tool {name!r}"
        if not isinstance(arguments, dict):
            return f"arguments are {type(arguments).__name__}, not an object"
        error = next(iter(validators[name].iter_errors(arguments)), None)
        return None if error is None else re.sub(r"\s+", " ", error.message)[:200]

    return check
