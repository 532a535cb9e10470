"""The decision to call under ``tool_choice="auto"`` on BFCL: a curve over ``tool_call_bias``, and the old way.

Relevant items (``simple_python``, ``multiple``: one of the tools answers the question) against
``irrelevance`` (no tool fits; the right answer is prose), each case's functions as OpenAI-style
tools, greedy vanilla decoding on the bundled model:

- ``generic`` (the default on a template without tools): every case is decoded once with the
  call branch forced (``tool_call_bias=50``); the result carries the model's own log-odds of
  calling at the decision (``GenerationResult.call_log_odds``, independent of the bias) and the
  call. The decision at any bias ``b`` is ``log-odds + b > 0`` and the call written after it does
  not depend on ``b``, so the curve is exact for every ``b`` from one decode per case: share of
  relevant items called, share of irrelevant items answered in prose, BFCL AST accuracy on the
  relevant items (a call counts only where the decision at ``b`` calls).
- ``hermes`` (the library's behaviour before: the Hermes tool prompt rendered by the library,
  free text with a lazy grammar from ``<tool_call>`` on): decoded once per case.

    python benchmarks/tool_decision.py --limit 2            # a smoke run
    python benchmarks/tool_decision.py --limit 20 --out docs/results/tool-decision   # the recorded run

Writes OUT.json (per-case log-odds, calls and verdicts, the curve), OUT.md and OUT.png.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from bfcl import Case, ast_correct, load_category
from scoring import proportion

from aligned_llm import AlignedLLM, GenerationResult

RELEVANT = ("simple_python", "multiple")
IRRELEVANT = ("irrelevance",)
FORCE_CALL = 50.0
BIASES = [round(-6 + 0.25 * step, 2) for step in range(41)]
"""The margins the curve is drawn over (log-odds units)."""


def sample(limit: int, seed: int) -> list[Case]:
    """``limit`` cases per category, the same for both behaviours."""
    rng = random.Random(seed)
    cases: list[Case] = []
    for category in (*RELEVANT, *IRRELEVANT):
        pool = list(load_category(category))
        cases += rng.sample(pool, min(limit, len(pool)))
    return cases


def decode(llm: AlignedLLM, cases: list[Case], max_new_tokens: int, **settings: Any) -> list[GenerationResult]:
    """Every case submitted at once (the running batch shares their forwards)."""
    generations = [
        llm.submit(list(case.messages), tools=list(case.tools), max_new_tokens=max_new_tokens, **settings)
        for case in cases
    ]
    return [generation.result() for generation in generations]


def calls_of(result: GenerationResult) -> list[tuple[str, dict[str, Any]]]:
    return [(call.name, dict(call.arguments)) for call in result.tool_calls]


def curve(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per bias: relevant items called, irrelevant items answered in prose, AST accuracy on the relevant ones."""
    relevant = [row for row in rows if row["category"] in RELEVANT]
    irrelevant = [row for row in rows if row["category"] in IRRELEVANT]
    points = []
    for bias in BIASES:
        calls = [row["log_odds"] + bias > 0 for row in relevant]
        points.append({
            "bias": bias,
            "called": proportion(calls),
            "prose_when_irrelevant": proportion([row["log_odds"] + bias <= 0 for row in irrelevant]),
            "ast_accuracy": proportion(
                [called and row["generic_correct"] for called, row in zip(calls, relevant, strict=True)]
            ),
        })  # fmt: skip
    return points


def old_behaviour(rows: list[dict[str, Any]]) -> dict[str, Any]:
    relevant = [row for row in rows if row["category"] in RELEVANT]
    irrelevant = [row for row in rows if row["category"] in IRRELEVANT]
    return {
        "called": proportion([bool(row["hermes_calls"]) for row in relevant]),
        "prose_when_irrelevant": proportion([not row["hermes_calls"] for row in irrelevant]),
        "ast_accuracy": proportion([row["hermes_correct"] for row in relevant]),
    }


def measure(args: argparse.Namespace) -> tuple[list[dict[str, Any]], float]:
    """Decode the sampled cases both ways; per case its log-odds, calls and BFCL verdicts."""
    llm = AlignedLLM.default()
    cases = sample(args.limit, args.seed)
    started = time.perf_counter()
    generic = decode(llm, cases, args.max_new_tokens, tool_call_bias=FORCE_CALL)
    hermes = decode(llm, cases, args.max_new_tokens, tool_format="hermes")
    seconds = time.perf_counter() - started
    rows = []
    for case, new, old in zip(cases, generic, hermes, strict=True):
        if new.call_log_odds is None:
            raise RuntimeError(f"{case.id}: no decision was recorded")
        rows.append({
            "id": case.id, "category": case.category, "log_odds": new.call_log_odds,
            "generic_calls": calls_of(new), "generic_correct": ast_correct(case, calls_of(new)),
            "hermes_calls": calls_of(old), "hermes_correct": ast_correct(case, calls_of(old)), "hermes_text": old.text,
        })  # fmt: skip
    return rows, seconds


def plot(points: list[dict[str, Any]], old: dict[str, Any], default_bias: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.2))
    biases = [point["bias"] for point in points]
    for key, label, color in (
        ("called", "relevant items called", "tab:blue"),
        ("prose_when_irrelevant", "irrelevant items answered in prose", "tab:orange"),
        ("ast_accuracy", "AST accuracy (relevant)", "tab:green"),
    ):
        axis.plot(biases, [100 * point[key]["rate"] for point in points], label=label, color=color)
        axis.axhline(100 * old[key]["rate"], color=color, linestyle=":", linewidth=1)
    axis.axvline(
        default_bias, color="grey", linestyle="--", linewidth=1, label=f"default tool_call_bias = {default_bias:g}"
    )
    axis.set_xlabel("tool_call_bias (log-odds added to calling)")
    axis.set_ylabel("%")
    axis.set_ylim(0, 100)
    axis.set_title(title, fontsize=9)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    axis.text(
        0.01, 0.01, "dotted: the old behaviour (hermes prompt, lazy grammar)", transform=axis.transAxes, fontsize=7
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def cell(entry: dict[str, float]) -> str:
    return f"{100 * entry['rate']:.0f}% [{100 * entry['low']:.0f}, {100 * entry['high']:.0f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20, help="cases per category")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--out", type=Path, default=None, help="OUT.json, OUT.md, OUT.png")
    parser.add_argument(
        "--from-json", type=Path, default=None,
        help="redraw the curve, table and plot of a recorded run (its per-case log-odds and calls) at today's default",
    )  # fmt: skip
    args = parser.parse_args()

    from aligned_llm.common_settings import DEFAULT_TOOL_CALL_BIAS

    if args.from_json is not None:
        recorded = json.loads(args.from_json.read_text())
        rows, seconds = recorded["cases"], recorded["seconds"]
        args.limit = sum(row["category"] == IRRELEVANT[0] for row in rows)
    else:
        rows, seconds = measure(args)
    points = curve(rows)
    old = old_behaviour(rows)
    chosen = next(point for point in points if point["bias"] == DEFAULT_TOOL_CALL_BIAS)
    title = (f"BFCL, bundled SmolLM2-135M, greedy:\n{args.limit} cases each of simple_python, multiple "
             f"(relevant) and irrelevance")  # fmt: skip
    table = [
        "| | relevant items called | irrelevant items answered in prose | AST accuracy (relevant) |",
        "|---|---|---|---|",
        f"| old: hermes prompt, lazy grammar | {cell(old['called'])} | {cell(old['prose_when_irrelevant'])} | "
        f"{cell(old['ast_accuracy'])} |",
    ]
    for point in points:
        if point["bias"] in (-3.0, -2.0, -1.5, -1.0, -0.5, DEFAULT_TOOL_CALL_BIAS, 0.0, 0.5, 1.0):
            mark = " (default)" if point["bias"] == DEFAULT_TOOL_CALL_BIAS else ""
            table.append(
                f"| generic, tool_call_bias = {point['bias']:g}{mark} | {cell(point['called'])} | "
                f"{cell(point['prose_when_irrelevant'])} | {cell(point['ast_accuracy'])} |"
            )
    print("\n".join(table))
    print(f"{len(rows)} cases, both behaviours, in {seconds:.0f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary = {"title": title, "seconds": seconds, "default_bias": DEFAULT_TOOL_CALL_BIAS, "old": old,
                   "at_default": chosen, "curve": points, "cases": rows}  # fmt: skip
        args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
        args.out.with_suffix(".md").write_text(title.replace("\n", " ") + "\n\n" + "\n".join(table) + "\n")
        plot(points, old, DEFAULT_TOOL_CALL_BIAS, args.out.with_suffix(".png"), title)


if __name__ == "__main__":
    main()
