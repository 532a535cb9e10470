"""The tool-calling benchmark's data, type conversion and scoring (benchmarks/bfcl.py, tools.py), without a model."""

from __future__ import annotations

import copy
import sys

import bfcl
import pytest
import scoring
import tools
from bfcl import (
    CATEGORIES,
    FLOAT_HINT,
    PYTHON_HINT,
    ast_correct,
    json_schema,
    load_category,
    openai_tool,
    reference_calls,
    schema_validator,
)

CALL_CATEGORIES = [c for c in CATEGORIES if c != "irrelevance"]
SCHEMA_QUIRKS = {"simple_python_307", "parallel_152"}
"""BFCL possible answers that allow a value their own schema forbids (True for a string, None for a float)."""


@pytest.mark.eval_data("bfcl-eval")
def test_every_category_loads_whole_with_answers():
    sizes = {category: len(load_category(category)) for category in CATEGORIES}
    assert sizes == {"simple_python": 400, "multiple": 200, "parallel": 200, "irrelevance": 240}
    for category in CALL_CATEGORIES:
        for case in load_category(category):
            assert case.category == category and case.id.startswith(category)
            assert case.possible_answer, case.id
            assert case.messages[-1]["role"] == "user" and case.messages[-1]["content"]
    assert all(case.possible_answer is None for case in load_category("irrelevance"))
    assert {len(case.tools) for case in load_category("multiple")} - {1} != set()  # several tools to choose from
    assert max(len(case.possible_answer) for case in load_category("parallel")) >= 2


def test_loader_rejects_an_unknown_category():
    with pytest.raises(ValueError, match="simple_python"):
        load_category("live_simple")


def test_bfcl_types_become_json_schema_types():
    converted = json_schema({
        "type": "dict",
        "properties": {
            "ratio": {"type": "float", "description": "A ratio."},
            "point": {"type": "tuple", "items": {"type": "float"}},
            "anything": {"type": "any", "description": "Free."},
            "name": {"type": "String"},
            "flag": {"type": "Boolean"},
            "rows": {"type": "array", "items": {"type": "dict", "properties": {"n": {"type": "integer"}}}},
        },
        "required": ["ratio"],
    })  # fmt: skip
    assert converted["type"] == "object" and converted["required"] == ["ratio"]
    properties = converted["properties"]
    assert properties["ratio"] == {"type": "number", "description": "A ratio." + FLOAT_HINT}
    assert properties["point"] == {"type": "array", "items": {"type": "number"}}
    assert properties["anything"] == {"description": "Free."}  # no type constraint
    assert properties["name"] == {"type": "string"} and properties["flag"] == {"type": "boolean"}
    assert properties["rows"]["items"] == {"type": "object", "properties": {"n": {"type": "integer"}}}


def test_unknown_bfcl_type_is_an_error():
    with pytest.raises(ValueError, match="'quaternion'"):
        json_schema({"type": "quaternion"})


def test_openai_tool_shape_and_harness_hints():
    tool = openai_tool({"name": "math.factorial", "description": "Factorial.",
                        "parameters": {"type": "dict", "properties": {"number": {"type": "integer"}}}})  # fmt: skip
    assert tool == {"type": "function", "function": {
        "name": "math_factorial", "description": "Factorial." + PYTHON_HINT,
        "parameters": {"type": "object", "properties": {"number": {"type": "integer"}}}}}  # fmt: skip


@pytest.mark.eval_data("bfcl-eval")
def test_no_bfcl_type_is_left_unconverted():
    json_types = {"string", "integer", "number", "boolean", "array", "object"}

    def types(node):
        yield node.get("type")
        for child in node.get("properties", {}).values():
            yield from types(child)
        if "items" in node:
            yield from types(node["items"])

    seen = {t for category in CATEGORIES for case in load_category(category) for tool in case.tools
            for t in types(tool["function"]["parameters"])}  # fmt: skip
    assert seen - {None} == json_types


@pytest.mark.eval_data("bfcl-eval")
@pytest.mark.parametrize("category", CALL_CATEGORIES)
def test_every_possible_answer_as_calls_scores_correct(category):
    for case in load_category(category):
        assert ast_correct(case, reference_calls(case)), case.id


@pytest.mark.eval_data("bfcl-eval")
@pytest.mark.parametrize("category", CALL_CATEGORIES)
def test_possible_answers_are_schema_valid_under_the_converted_tools(category):
    for case in load_category(category):
        check = schema_validator(case)
        errors = [check(name, arguments) for name, arguments in reference_calls(case)]
        if case.id in SCHEMA_QUIRKS:
            assert any(errors), case.id
        else:
            assert not any(errors), (case.id, errors)


def _optional(case, name):
    return {arg for arg, allowed in case.possible_answer[0][name].items() if "" in allowed}


@pytest.mark.eval_data("bfcl-eval")
def test_leaving_out_optional_arguments_and_ints_for_floats_still_score_correct():
    left_out = widened = 0
    for case in load_category("simple_python"):
        [(name, arguments)] = reference_calls(case)
        [bfcl_name] = case.possible_answer[0]
        required = set(case.functions[0]["parameters"].get("required", []))
        optional = _optional(case, bfcl_name) - required
        if optional & set(arguments):
            trimmed = {k: v for k, v in arguments.items() if k not in optional}
            assert ast_correct(case, [(name, trimmed)]), case.id
            left_out += 1
        floats = {k for k, v in arguments.items() if isinstance(v, float) and v.is_integer()}
        if floats:
            assert ast_correct(case, [(name, {**arguments, **{k: int(arguments[k]) for k in floats}})]), case.id
            widened += 1
    assert left_out > 20 and widened > 5


@pytest.mark.eval_data("bfcl-eval")
def test_strings_compare_as_bfcl_does_ignoring_case_and_punctuation():
    case = next(c for c in load_category("simple_python") if c.id == "simple_python_307")
    [(name, arguments)] = reference_calls(case)
    assert ast_correct(case, [(name, {**arguments, "date": "2021 01 28"})])
    assert ast_correct(case, [(name, {**arguments, "teams": ["LAKERS", "clippers"]})])
    assert not ast_correct(case, [(name, {**arguments, "teams": ["Lakers", "Celtics"]})])


def _wrong_value(value, allowed):
    """A value of the same type that no possible answer allows, or None where none is easy to make."""
    if isinstance(value, bool):
        return None if (not value) in allowed else (not value)
    if isinstance(value, int | float):
        return max(v for v in allowed if isinstance(v, int | float) and not isinstance(v, bool)) + 7919
    if isinstance(value, str):
        return value + " elsewhere"
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return [*value, value[0] if value else 1]
    return None


def _perturbations(case):
    """(label, calls) pairs that BFCL must score wrong: wrong tool, missing, extra and wrong arguments, wrong count."""
    calls = reference_calls(case)
    name, arguments = calls[0]
    [[bfcl_name, allowed]] = case.possible_answer[0].items()
    rest = calls[1:]
    other_tools = [t["function"]["name"] for t in case.tools if t["function"]["name"] != name]
    yield "unknown tool", [(name + "_v2", arguments), *rest]
    if other_tools:
        yield "another given tool", [(other_tools[0], arguments), *rest]
    required = [r for r in case.functions[[f["name"] for f in case.functions].index(bfcl_name)]["parameters"]
                .get("required", []) if r in arguments]  # fmt: skip
    if required:
        yield f"missing {required[0]}", [(name, {k: v for k, v in arguments.items() if k != required[0]}), *rest]
    yield "unexpected argument", [(name, {**arguments, "zz_unexpected": 1}), *rest]
    for key, value in arguments.items():
        wrong = _wrong_value(value, allowed[key])
        if wrong is not None:
            yield f"wrong {key}", [(name, {**arguments, key: wrong}), *rest]
            break
    yield "no call", []
    yield "one call too many", [*calls, calls[-1]]
    if rest:
        yield "one call missing", calls[:-1]


@pytest.mark.eval_data("bfcl-eval")
@pytest.mark.parametrize("category", CALL_CATEGORIES)
def test_perturbed_answers_score_wrong(category):
    labels = set()
    for case in load_category(category):
        for label, calls in _perturbations(case):
            assert not ast_correct(case, copy.deepcopy(calls)), (case.id, label)
            labels.add(label.split()[0])
    assert {"unknown", "missing", "unexpected", "wrong", "no", "one"} <= labels


@pytest.mark.eval_data("bfcl-eval")
def test_irrelevance_is_correct_only_without_a_call():
    case = load_category("irrelevance")[0]
    tool = case.tools[0]["function"]
    assert ast_correct(case, [])
    assert not ast_correct(case, [(tool["name"], {"weight": 70.0, "height": 1.8})])


@pytest.mark.eval_data("bfcl-eval")
def test_schema_validator_names_what_is_wrong():
    case = next(c for c in load_category("simple_python") if c.id == "simple_python_0")
    check = schema_validator(case)
    assert check("calculate_triangle_area", {"base": 10, "height": 5}) is None
    assert "unknown tool" in check("triangle_area", {"base": 10, "height": 5})
    assert "'height' is a required property" in check("calculate_triangle_area", {"base": 10})
    assert "is not of type 'integer'" in check("calculate_triangle_area", {"base": "ten", "height": 5})


@pytest.mark.eval_data("bfcl-eval")
def test_bfcl_checker_loads_offline_without_leaving_its_stand_in():
    module = bfcl.ast_checker_module()
    assert module.__file__.endswith("bfcl_eval/eval_checker/ast_eval/ast_checker.py")
    assert "bfcl_eval.constants.model_config" not in sys.modules
    assert not any(name.startswith("bfcl_eval.model_handler") for name in sys.modules)


def _record(case, mode, calls, text=""):
    return tools.score(case, mode, text, calls, "tool_calls" if calls else "stop")


@pytest.mark.eval_data("bfcl-eval")
def test_score_separates_valid_calls_from_correct_ones():
    case = next(c for c in load_category("simple_python") if c.id == "simple_python_0")
    right = _record(case, "constrained", [("calculate_triangle_area", {"base": 10, "height": 5})])
    wrong_value = _record(case, "constrained", [("calculate_triangle_area", {"base": 12, "height": 5})])
    invalid = _record(case, "unconstrained", [("calculate_triangle_area", {"base": "ten"})])
    prose = _record(case, "unconstrained", [], text="The area is 25.")
    assert (right["called"], right["valid"], right["correct"]) == (True, True, True)
    assert (wrong_value["called"], wrong_value["valid"], wrong_value["correct"]) == (True, True, False)
    assert (invalid["called"], invalid["valid"], invalid["correct"]) == (True, False, False)
    assert len(invalid["errors"]) == 1
    assert (prose["called"], prose["valid"], prose["correct"]) == (False, False, False)


@pytest.mark.eval_data("bfcl-eval")
def test_summary_rates_use_wilson_intervals_and_count_violations_under_the_grammar_only():
    case = next(c for c in load_category("simple_python") if c.id == "simple_python_0")
    irrelevant = load_category("irrelevance")[0]
    good = [("calculate_triangle_area", {"base": 10, "height": 5})]
    bad = [("calculate_triangle_area", {"base": "ten", "height": 5})]
    records = (
        [_record(case, "constrained", good)] * 3 + [_record(case, "constrained", bad)]
        + [_record(case, "unconstrained", bad)] * 2
        + [_record(irrelevant, "constrained", [], text="I cannot do that with these tools.")] * 2
    )  # fmt: skip
    summary = tools.summarise(records)
    simple = summary["rates"]["constrained"]["simple_python"]
    assert simple["valid"]["n"] == 4 and simple["valid"]["rate"] == 0.75
    assert (simple["valid"]["low"], simple["valid"]["high"]) == scoring.wilson_interval(3, 4)
    assert summary["rates"]["unconstrained"]["simple_python"]["valid"]["rate"] == 0.0
    assert summary["rates"]["constrained"]["irrelevance"]["correct"]["rate"] == 1.0
    assert summary["rates"]["constrained"]["irrelevance"]["called"]["rate"] == 0.0
    schema = summary["schema"]
    assert (schema["constrained_answers"], schema["constrained_calls"]) == (6, 4)
    assert [v["mode"] for v in schema["violations"]] == ["constrained"]  # the unconstrained ones are not violations
    table = tools.markdown(summary, {"header": "model=x", "cases": 4, "seed": 0, "max_new_tokens": 8,
                                     "principle": tools.PRINCIPLE, "seconds": 1.0})  # fmt: skip
    assert "Schema violations under the grammar: **1** in 6 answers (4 calls)." in table
    assert "| `simple_python` | 0% [0, 66] | 75% [30, 95] |" in table


def test_tools_benchmark_reuses_the_shared_wilson_arithmetic():
    assert tools.proportion is scoring.proportion
    entry = scoring.proportion([True, False, False, False, False])
    assert (entry["low"], entry["high"]) == scoring.wilson_interval(1, 5)


@pytest.mark.eval_data("bfcl-eval")
def test_sampled_cases_are_the_same_for_every_call_and_per_category():
    first = tools.sample_cases(["simple_python", "irrelevance"], 5, seed=3)
    assert [c.id for c in first] == [c.id for c in tools.sample_cases(["simple_python", "irrelevance"], 5, seed=3)]
    assert [c.category for c in first] == ["simple_python"] * 5 + ["irrelevance"] * 5
    assert first != tools.sample_cases(["simple_python", "irrelevance"], 5, seed=4)


@pytest.mark.eval_data("bfcl-eval")
def test_plot_writes_a_png(tmp_path):
    case = load_category("simple_python")[0]
    records = [_record(case, mode, reference_calls(case)) for mode in tools.MODES]
    tools.plot(tools.summarise(records), "test", tmp_path / "tools.png")
    assert (tmp_path / "tools.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _small_case(index, tool_name, argument):
    tool = {"type": "function", "function": {"name": tool_name, "description": "Look something up.", "parameters": {
        "type": "object", "properties": {argument: {"type": "integer"}}, "required": [argument]}}}  # fmt: skip
    return bfcl.Case(id=f"small_{index}", category="simple_python", messages=({"role": "user", "content": "Hi"},),
                     functions=(), tools=(tool,), possible_answer=None)  # fmt: skip


def test_cases_with_different_tools_batch_as_if_each_ran_alone(tiny_llm):
    cases = [_small_case(0, "lookup_year", "year"), _small_case(1, "count_items", "items")]
    settings = {"tool_choice": "required", "max_new_tokens": 30, "tool_format": "hermes"}
    settings.update(tools.settings_for("constrained", ""))
    batched = tools.generate_cases(tiny_llm, cases, settings)
    for case, result in zip(cases, batched, strict=True):
        alone = tiny_llm.generate([dict(m) for m in case.messages], tools=list(case.tools), **settings)
        assert result.text == alone.text
        assert [(c.name, c.arguments) for c in result.tool_calls] == [(c.name, c.arguments) for c in alone.tool_calls]
        name = case.tools[0]["function"]["name"]  # each request under its own grammar: a call of its own tool
        written = tiny_llm.tokenizer.decode(result.token_ids)
        assert written.startswith(f'<tool_call>\n{{"name": "{name}"')
        assert result.token_ids == alone.token_ids


@pytest.mark.eval_data("bfcl-eval")
def test_unparsed_call_blocks_are_invalid_but_a_call_cut_by_the_token_limit_is_unfinished():
    case = next(c for c in load_category("simple_python") if c.id == "simple_python_0")
    broken = tools.score(case, "constrained", '<tool_call>\n{"name": calculate</tool_call>', [], "stop")
    cut = tools.score(case, "constrained", '<tool_call>\n{"name": "calculate_triangle_area", "argu', [], "length")
    assert broken["called"] and not broken["valid"] and broken["errors"] and not broken["unfinished_call"]
    assert cut["called"] and not cut["valid"] and not cut["errors"] and cut["unfinished_call"]
    assert [r["id"] for r in tools.violations([broken, cut])] == ["simple_python_0"]
    assert tools.violations([broken, cut])[0] is broken


def test_decision_curve_reads_calls_and_prose_off_the_recorded_log_odds():
    import tool_decision

    rows = [
        {"category": "simple_python", "log_odds": 1.0, "generic_correct": True},
        {"category": "multiple", "log_odds": -0.5, "generic_correct": True},
        {"category": "simple_python", "log_odds": 0.2, "generic_correct": False},
        {"category": "irrelevance", "log_odds": 0.3, "generic_correct": False},
        {"category": "irrelevance", "log_odds": -2.0, "generic_correct": True},
    ]
    points = {point["bias"]: point for point in tool_decision.curve(rows)}
    at_zero = points[0.0]
    assert at_zero["called"]["rate"] == pytest.approx(2 / 3)  # 1.0 and 0.2 call, -0.5 does not
    assert at_zero["prose_when_irrelevant"]["rate"] == pytest.approx(1 / 2)  # -2.0 answers, 0.3 calls
    assert at_zero["ast_accuracy"]["rate"] == pytest.approx(1 / 3)  # only the called and correct one
    assert points[1.0]["called"]["rate"] == 1.0 and points[1.0]["ast_accuracy"]["rate"] == pytest.approx(2 / 3)
    assert points[-6.0]["called"]["rate"] == 0.0 and points[-6.0]["prose_when_irrelevant"]["rate"] == 1.0
