"""Tool calling on the Berkeley Function Calling Leaderboard: valid calls and AST accuracy, with and without a grammar.

BFCL's ``simple_python``, ``multiple``, ``parallel`` and ``irrelevance`` categories (read from the
``bfcl-eval`` wheel by ``bfcl.py``), each case's functions given as OpenAI-style tools with
``tool_choice="auto"`` and parallel calls allowed, in the Hermes format (``tool_format="hermes"``: the
library's format before the calibrated ``generic`` one, whose decision ``tool_decision.py`` measures), decoded
three ways (and a fourth on request):

- ``unconstrained``: the tools rendered into the prompt and calls parsed from free text, no
  grammar (``constrained=False``): what a user gets today from the Hugging Face adapters;
- ``constrained``: grammar-constrained decoding, plain (vanilla) decoding;
- ``opad``: grammar-constrained decoding under OPAD with a principle (``--principle``);
- ``required`` (not run by default): grammar-constrained vanilla with ``tool_choice="required"``,
  so that every answer is a call and AST accuracy measures the arguments alone.

Per mode and category: the share of outputs that make at least one call, the share whose calls are
all valid (arguments parse, the tool is one of the case's, the arguments are valid against its
schema), and BFCL's AST accuracy (its own checker; for ``irrelevance``: no call made, and a prose
answer is correct), each with a 95% Wilson interval. Under the constrained modes every call must be
valid: any that is not is counted, printed and stored as a schema violation.

    python benchmarks/tools.py --limit 1 --modes constrained --categories simple_python   # a smoke run
    python benchmarks/tools.py --limit 3 --batch-size 12 --max-new-tokens 48 --dtype float32 --out docs/results/tools
                                             # the recorded run (shared 2-core CPU, `make bench-tools`)
    python benchmarks/tools.py --limit 100 --device cuda --batch-size 32 --out docs/results/tools-cuda   # tighter

Cases are sampled per category with ``--seed`` (the same cases for every mode, so the comparison is
paired). Writes OUT.json (summary), OUT-samples.jsonl (every answer), OUT.md and OUT.png.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from bfcl import CATEGORIES, Case, ast_correct, load_category, schema_validator
from report import rate_bars, rate_cell
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from scoring import proportion

from aligned_llm import AlignedLLM, GenerationResult
from aligned_llm.answer.formats.hermes import CALL_CLOSE, CALL_OPEN

PRINCIPLE = "Answer concisely and precisely."
MODES: dict[str, str] = {
    "unconstrained": "prompted + parsed (no grammar)",
    "constrained": "grammar, vanilla",
    "opad": "grammar, OPAD",
    "required": "grammar, vanilla, call required",
}
CONSTRAINED_MODES = ("constrained", "opad", "required")
METRICS: dict[str, str] = {
    "called": "made a call",
    "valid": "valid calls",
    "correct": "AST accuracy",
    "cut": "cut at max new tokens",
}


def settings_for(mode: str, principle: str) -> dict[str, Any]:
    """The library settings that make one benchmark mode (tools and tool_choice are added per case)."""
    return {
        "unconstrained": {"constrained": False},
        "constrained": {"constrained": True},
        "opad": {"constrained": True, "method": "opad", "principle": principle},
        "required": {"constrained": True, "tool_choice": "required"},
    }[mode]


def score(case: Case, mode: str, text: str, calls: list[tuple[str, Any]], finish_reason: str) -> dict[str, Any]:
    """One answer's record: its calls, why any call is invalid, and BFCL's verdict."""
    check = schema_validator(case)
    errors = [error for name, arguments in calls if (error := check(name, arguments)) is not None]
    # a closed call block the library could not parse stays in the prose (without a grammar); a block cut by
    # max_new_tokens leaves nothing in the prose (the reader drops markup), so it shows as `cut` without a call
    unfinished = finish_reason == "length" and text.rfind(CALL_OPEN) > text.rfind(CALL_CLOSE)
    if unparsed := text.count(CALL_OPEN) - unfinished:
        errors += [f"{CALL_OPEN} block that does not parse as a call"] * unparsed
    return {
        "mode": mode, "category": case.category, "id": case.id, "text": text,
        "calls": [{"name": name, "arguments": arguments} for name, arguments in calls],
        "finish_reason": finish_reason, "errors": errors,
        "called": bool(calls) or CALL_OPEN in text, "valid": bool(calls) and not errors and not unfinished,
        "correct": ast_correct(case, calls), "cut": finish_reason == "length", "unfinished_call": unfinished,
    }  # fmt: skip


def violations(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Answers of a constrained mode with an invalid call: the grammar promises there are none.

    A call cut off by ``max_new_tokens`` is not one: it is incomplete, not invalid (``unfinished_call``).
    """
    return [r for r in records if r["mode"] in CONSTRAINED_MODES and r["errors"]]


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode and category, each metric as a rate with its 95% Wilson interval; and the schema violations."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[record["mode"], record["category"]].append(record)
    rates: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (mode, category), rows in groups.items():
        rates[mode][category] = {metric: proportion([r[metric] for r in rows]) for metric in METRICS}
    bad = violations(records)
    checked = [r for r in records if r["mode"] in CONSTRAINED_MODES]
    return {
        "rates": dict(rates),
        "schema": {
            "constrained_answers": len(checked),
            "constrained_calls": sum(len(r["calls"]) for r in checked),
            "violations": [{k: r[k] for k in ("mode", "id", "calls", "errors")} for r in bad],
        },
    }


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    modes = [m for m in MODES if m in summary["rates"]]
    categories = [c for c in CATEGORIES if any(c in summary["rates"][m] for m in modes)]
    lines = [
        f"`{meta['header']}`; {meta['cases']} cases per category (seed {meta['seed']}), greedy, "
        f'at most {meta["max_new_tokens"]} new tokens, `tool_choice="auto"` unless the mode requires a call; '
        f"OPAD principle: "
        f"“{meta['principle']}”; {meta['seconds']:.0f} s.",
        "",
    ]
    for metric, label in METRICS.items():
        lines += [f"### {label}, rate [95% CI]", "", "| category | " + " | ".join(MODES[m] for m in modes) + " |",
                  "|---" * (len(modes) + 1) + "|"]  # fmt: skip
        for category in categories:
            cells = [rate_cell(summary["rates"][m].get(category, {}).get(metric)) for m in modes]
            lines.append(f"| `{category}` | " + " | ".join(cells) + " |")
        lines.append("")
    schema = summary["schema"]
    if schema["constrained_answers"]:
        lines.append(
            f"Schema violations under the grammar: **{len(schema['violations'])}** in "
            f"{schema['constrained_answers']} answers ({schema['constrained_calls']} calls)."
        )
    for bad in schema["violations"]:
        lines.append(f"- `{bad['mode']}` `{bad['id']}`: {'; '.join(bad['errors'])}")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in MODES if m in summary["rates"]]
    categories = [c for c in CATEGORIES if any(c in summary["rates"][m] for m in modes)]
    figure, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for axis, metric in zip(axes, ("valid", "correct"), strict=True):
        series = {MODES[m]: [summary["rates"][m].get(c, {}).get(metric) for c in categories] for m in modes}
        rate_bars(axis, categories, series, f"{METRICS[metric]} (%), 95% CI")
        if metric == "valid":
            axis.get_legend().remove()
        axis.set_title(METRICS[metric] + (" (irrelevance: no call)" if metric == "correct" else ""), fontsize=10)
    figure.suptitle(f"BFCL tool calling — {title}", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def sample_cases(categories: list[str], limit: int, seed: int) -> list[Case]:
    """``limit`` cases of each category, drawn with ``seed`` and kept in BFCL's order."""
    rng = random.Random(seed)
    cases: list[Case] = []
    for category in categories:
        every = load_category(category)
        cases += [every[i] for i in sorted(rng.sample(range(len(every)), min(limit, len(every))))]
    return cases


def generate_cases(llm: AlignedLLM, cases: list[Case], settings: dict[str, Any]) -> list[GenerationResult]:
    """Decode cases with different tools together, each with its own tools (and grammar).

    Each case is submitted on its own (``AlignedLLM.submit``); the submissions join the model's
    running batch, so the cases share forwards as one batch would.
    """
    generations = [
        llm.submit([dict(message) for message in case.messages], tools=list(case.tools), **settings) for case in cases
    ]
    return [generation.result() for generation in generations]


def run_mode(llm: AlignedLLM, mode: str, cases: list[Case], args: argparse.Namespace, progress: Progress, task: Any):
    """Decode every case in one mode, ``--batch-size`` cases at a time, and score each answer."""
    records = []
    settings = {"tool_choice": "auto", "parallel_tool_calls": True, "max_new_tokens": args.max_new_tokens,
                "tool_format": "hermes", **settings_for(mode, args.principle)}  # fmt: skip
    progress.update(task, description=f"{mode:>13}")
    for start in range(0, len(cases), args.batch_size):
        chunk = cases[start : start + args.batch_size]
        for case, result in zip(chunk, generate_cases(llm, chunk, settings), strict=True):
            calls = [(call.name, call.arguments) for call in result.tool_calls]
            records.append(score(case, mode, result.text, calls, result.finish_reason))
        progress.advance(task, len(chunk))
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=50, help="cases per category")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--categories", default=",".join(CATEGORIES), help=f"comma-separated, from {','.join(CATEGORIES)}"
    )
    parser.add_argument(
        "--modes", default="unconstrained,constrained,opad", help=f"comma-separated, from {','.join(MODES)}"
    )
    parser.add_argument("--principle", default=PRINCIPLE, help="OPAD's principle")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8, help="cases decoded together")
    parser.add_argument("--device")
    parser.add_argument("--dtype", help="float32 / bfloat16 (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--out", help="write OUT.json, OUT-samples.jsonl, OUT.md and OUT.png")
    args = parser.parse_args()
    categories, modes = args.categories.split(","), args.modes.split(",")
    if unknown := [c for c in categories if c not in CATEGORIES]:
        parser.error(f"--categories: unknown {unknown}; allowed: {', '.join(CATEGORIES)}")
    if unknown := [m for m in modes if m not in MODES]:
        parser.error(f"--modes: unknown {unknown}; allowed: {', '.join(MODES)}")
    if args.limit < 1 or args.batch_size < 1 or args.max_new_tokens < 1:
        parser.error("--limit, --batch-size and --max-new-tokens must be >= 1")

    started = time.perf_counter()
    llm = AlignedLLM.default(device=args.device, dtype=args.dtype)
    header = f"model={llm.name} device={llm.device} dtype={str(llm.model.dtype).removeprefix('torch.')}" + (
        f" gpu={torch.cuda.get_device_name(llm.device)}" if llm.device.type == "cuda" else ""
    )
    cases = sample_cases(categories, args.limit, args.seed)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    records: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    meta = {"header": header, "cases": args.limit, "seed": args.seed, "max_new_tokens": args.max_new_tokens,
            "batch_size": args.batch_size, "principle": args.principle, "mode_seconds": seconds,
            "case_ids": [c.id for c in cases]}  # fmt: skip
    with Progress(*columns) as progress:
        task = progress.add_task("generating", total=len(cases) * len(modes))
        for mode in modes:
            mode_started = time.perf_counter()
            records += run_mode(llm, mode, cases, args, progress, task)
            seconds[mode] = time.perf_counter() - mode_started
            meta["seconds"] = time.perf_counter() - started
            if args.out:  # after every mode, so that a run cut short keeps what it measured
                write(Path(args.out), records, meta)
    table = markdown(summarise(records), meta)
    print(table)
    if violations(records):
        print(f"SCHEMA VIOLATIONS under the grammar: {len(violations(records))} (listed above)")


def write(out: Path, records: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """OUT.json (summary), OUT-samples.jsonl (every answer), OUT.md and OUT.png."""
    summary = summarise(records)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**meta, **summary}, indent=2) + "\n")
    with out.with_name(out.name + "-samples.jsonl").open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    out.with_suffix(".md").write_text(markdown(summary, meta))
    plot(summary, meta["header"].split(" gpu=")[0].replace("model=", ""), out.with_suffix(".png"))


if __name__ == "__main__":
    main()
