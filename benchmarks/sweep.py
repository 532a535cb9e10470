"""Does tuning with a sweep help? Best setting per principle chosen on one half of the prompts, reported on the other.

For each verifiable principle (checked by ``aligned_llm.sweeps.checkers``), on AlpacaEval
instructions split into a tuning half and a held-out half:

1. **Tune.** ``sweep`` OPAD over β on the tuning half, with direct prompting as a reference
   point. The chosen β is the one with the highest adherence whose perplexity under the plain
   model is at most ``--max-perplexity-ratio`` × direct prompting's (so gibberish cannot win);
   ties go to the more fluent point.
2. **Report.** On the held-out half (never seen while choosing), one sweep decodes the chosen
   β, the default β = 1 and direct prompting; adherence with a 95% Wilson interval, perplexity
   and repetition beside it.
3. **Cost.** For the first principle, the tuning sweep's wall time against decoding the same
   points one after another (one ``generate`` call per point), measured side by side.

    python benchmarks/sweep.py --prompts 6 --max-new-tokens 24 --principles 2   # smoke
    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/sweep.py --out docs/results/sweep   # the recorded run

On a CPU shared with other busy processes, one torch thread is much faster than two (threads
thrash); the recorded run used ``OMP_NUM_THREADS=1`` and says so in OUT.json.

Writes OUT.json (every number), OUT-samples.jsonl (every answer), OUT.md and OUT.png. Then
``--validate-proxy OUT`` scores every recorded answer with the principle-gain proxy and adds how
well it agrees with the checkers (AUC per principle).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from eval_data import alpaca_instructions
from report import rate_bars, rate_cell
from scoring import proportion

from aligned_llm import AlignedLLM, sweep
from aligned_llm.sweeps import checkers
from aligned_llm.sweeps.checkers import Checker


@dataclass(frozen=True)
class Case:
    """A principle in words and the checker that says whether an answer follows it."""

    name: str
    principle: str
    checker: Checker


CASES = (
    Case("at most 20 words", "Answer in at most 20 words.", checkers.max_words(20)),
    Case("lowercase", "Write your whole answer in lowercase letters only, with no capital letters.",
         checkers.lowercase()),
    Case("no commas", "Do not use any commas in your answer.", checkers.no_commas()),
    Case("opens with 'Sure'", "Begin your answer with the word 'Sure'.", checkers.starts_with("Sure")),
    Case("3-item list", "Answer with a list of exactly three items, each on its own line starting with '- '.",
         checkers.bullet_list(3)),
    Case("in French", "Answer in French.", checkers.in_language("fr")),
)  # fmt: skip
BETAS = (0.5, 1.0, 2.0, 4.0)
DEFAULT_BETA = 1.0


def prompt_halves(count: int, seed: int, max_chars: int = 160) -> tuple[list[str], list[str]]:
    """``count`` short AlpacaEval instructions (sampled with ``seed``), split into a tuning and a held-out half."""
    pool = [text for text in alpaca_instructions() if len(text) <= max_chars and "\n" not in text]
    chosen = random.Random(seed).sample(pool, count)
    return chosen[: count // 2], chosen[count // 2 :]


def choose(result: Any, ratio: float) -> tuple[Any, float]:
    """The best grid point under the fluency guard, and the perplexity limit used."""
    limit = ratio * result.point("direct prompting").perplexity
    try:
        return result.best(max_perplexity=limit), limit
    except ValueError:  # no β within the guard: the most fluent β
        return min((p for p in result.points if p.point.kind == "grid"), key=lambda p: p.perplexity), limit


def measure_cost(
    llm: AlignedLLM, case: Case, prompts: list[str], betas: tuple[float, ...], tokens: int, rounds: int
) -> dict:
    """Wall time of the same points decoded one after another (one ``generate`` per point), then as one sweep.

    The two alternate for ``rounds`` rounds on the same model; the ratio compares decoding only
    (the sweep's ``seconds``, from the first submission to the last point decoded; its scoring
    afterwards is recorded as ``sweep_s`` minus that); the speed-up is the median of the rounds'
    ratios (a shared machine's load moves both within a round alike).
    """
    settings = {"principle": case.principle, "max_new_tokens": tokens}
    timings = []
    for _ in range(rounds):
        load = os.getloadavg()[0]
        started = time.perf_counter()
        for beta in betas:
            llm.generate(prompts, method="opad", beta=beta, **settings)
        llm.generate(prompts, **settings)  # the direct-prompting reference point
        one_by_one = time.perf_counter() - started
        started = time.perf_counter()
        result = sweep(llm, prompts, {"beta": list(betas)}, method="opad", adherence=case.checker,
                       baselines=("direct",), **settings)  # fmt: skip
        together = time.perf_counter() - started
        timings.append({"one_by_one_s": one_by_one, "sweep_decode_s": result.seconds, "sweep_s": together,
                        "ratio": one_by_one / result.seconds, "load_before": load,
                        "load_after": os.getloadavg()[0]})  # fmt: skip
    return {"points": len(betas) + 1, "prompts": len(prompts), "rounds": timings,
            "speedup": statistics.median(t["ratio"] for t in timings)}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    llm = AlignedLLM.default(device=args.device, dtype=args.dtype)
    tune, held_out = prompt_halves(args.prompts, args.seed)
    llm.generate(tune[:1], max_new_tokens=4)  # warm-up
    cases = CASES[: args.principles]
    rows, samples = [], []
    started = time.perf_counter()
    cost = measure_cost(llm, cases[0], tune, BETAS, args.max_new_tokens, args.cost_rounds) if args.cost else None
    if args.cost_only:
        return {"meta": _meta(llm, args, started, tune, held_out), "principles": [], "cost": cost, "samples": []}
    for case in cases:
        tuning = sweep(llm, tune, {"beta": list(BETAS)}, method="opad", principle=case.principle,
                       adherence=case.checker, baselines=("direct",), max_new_tokens=args.max_new_tokens)  # fmt: skip
        chosen, limit = choose(tuning, args.max_perplexity_ratio)
        best_beta = chosen.point.values["beta"]
        grid = {"beta": [best_beta] if best_beta == DEFAULT_BETA else [best_beta, DEFAULT_BETA]}
        report = sweep(llm, held_out, grid, method="opad", principle=case.principle, adherence=case.checker,
                       baselines=("direct",), max_new_tokens=args.max_new_tokens)  # fmt: skip
        held = {
            "tuned": report.point(f"opad β={best_beta:g}"),
            "default": report.point(f"opad β={DEFAULT_BETA:g}"),
            "direct": report.point("direct prompting"),
        }
        row = {"principle": case.name, "text": case.principle, "chosen_beta": best_beta, "perplexity_limit": limit,
               "tuning": [point.as_dict() for point in tuning.points]}  # fmt: skip
        for name, point in held.items():
            passed = [record.adherence == 1.0 for record in point.records]
            row[name] = {**proportion(passed), "perplexity": point.perplexity, "repetition": point.repetition,
                         "mean_tokens": point.mean_tokens}  # fmt: skip
        rows.append(row)
        for half, result in (("tune", tuning), ("held-out", report)):
            samples += [{"principle": case.name, "half": half, **record} for record in result.to_records()]
        print(f"{case.name}: chosen β={best_beta:g}; held-out adherence tuned {row['tuned']['rate']:.0%}, "
              f"default {row['default']['rate']:.0%}, direct {row['direct']['rate']:.0%}", flush=True)  # fmt: skip
    return {"meta": _meta(llm, args, started, tune, held_out), "principles": rows, "cost": cost, "samples": samples}


def _meta(llm: AlignedLLM, args: argparse.Namespace, started: float, tune: list[str], held_out: list[str]) -> dict:
    return {"model": "SmolLM2-135M-Instruct (bundled)", "dtype": str(llm.model.dtype), "device": str(llm.device),
            "machine": f"{platform.processor() or platform.machine()}, {_cpu_count()} CPUs",
            "torch_threads": torch.get_num_threads(), "prompts": args.prompts, "seed": args.seed,
            "max_new_tokens": args.max_new_tokens, "betas": list(BETAS),
            "max_perplexity_ratio": args.max_perplexity_ratio, "seconds": time.perf_counter() - started,
            "tune_prompts": tune, "held_out_prompts": held_out}  # fmt: skip


def auc(passed: list[float], failed: list[float]) -> float | None:
    """P(a passing answer's score > a failing one's), ties counting one half; None without both kinds."""
    if not passed or not failed:
        return None
    wins = sum((p > f) + 0.5 * (p == f) for p in passed for f in failed)
    return wins / (len(passed) * len(failed))


def validate_proxy(llm: AlignedLLM, samples_path: Path) -> dict[str, Any]:
    """How well the principle-gain proxy ranks the checker's passing answers above its failing ones (AUC).

    Every answer of the recorded run (re-tokenised from its text, with the end-of-turn token when
    it stopped) gets the proxy's score: its mean log-prob per token under the plain model with
    the principle in context minus without. 0.5 means the proxy cannot tell them apart.
    """
    from aligned_llm.sweeps.fluency import answer_logprobs

    rows = [json.loads(line) for line in samples_path.read_text().splitlines() if line.strip()]
    texts = {case.name: case.principle for case in CASES}
    chat, eos = llm.chat_format, llm.tokenizer.eos_token_id
    plain, guided, answers = [], [], []
    for row in rows:
        conversation = [{"role": "user", "content": row["prompt"]}]
        plain.append(chat.encode(conversation))
        guided.append(chat.encode(chat.with_principle(conversation, texts[row["principle"]])))
        ids = llm.tokenizer(row["text"], add_special_tokens=False)["input_ids"]
        answers.append(ids + ([eos] if row["finish_reason"] == "stop" else []))
    gains = [g - p for g, p in zip(answer_logprobs(llm, guided, answers), answer_logprobs(llm, plain, answers),
                                   strict=True)]  # fmt: skip
    result = {}
    for case in CASES:
        scored = [(gain, row["adherence"]) for gain, row in zip(gains, rows, strict=True)
                  if row["principle"] == case.name and gain == gain]  # fmt: skip
        passed = [gain for gain, adherence in scored if adherence == 1.0]
        failed = [gain for gain, adherence in scored if adherence == 0.0]
        result[case.name] = {"auc": auc(passed, failed), "passed": len(passed), "failed": len(failed)}
    return result


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def markdown(summary: dict[str, Any]) -> str:
    meta, rows, cost = summary["meta"], summary["principles"], summary["cost"]
    half = meta["prompts"] // 2
    lines = [
        f"Held-out adherence, rate [95% Wilson interval], n = {meta['prompts'] - half} per cell; "
        f"perplexity under the plain model (token-weighted) beside it",
        "",
        "| principle | chosen β (on the tuning half) | tuned OPAD | default OPAD (β=1) | direct prompting |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [f"{rate_cell(row[k])} · ppl {row[k]['perplexity']:.1f}" for k in ("tuned", "default", "direct")]
        lines.append(f"| {row['principle']} | {row['chosen_beta']:g} | " + " | ".join(cells) + " |")
    totals = {name: sum(round(row[name]["rate"] * row[name]["n"]) for row in rows) for name in ("tuned", "default",
                                                                                                "direct")}  # fmt: skip
    n = sum(row["tuned"]["n"] for row in rows)
    lines.append("| **all** | | " + " | ".join(f"{totals[name]}/{n}" for name in ("tuned", "default", "direct")) + " |")
    if cost:
        rounds = "; ".join(f"{t['one_by_one_s']:.1f} s vs {t['sweep_decode_s']:.1f} s ({t['ratio']:.2f}×; scoring "
                           f"+{t['sweep_s'] - t['sweep_decode_s']:.1f} s; load {t['load_before']:.1f}→"
                           f"{t['load_after']:.1f})" for t in cost["rounds"])  # fmt: skip
        lines += [
            "",
            f"Cost: {cost['points']} points × {cost['prompts']} prompts × {meta['max_new_tokens']} new "
            f"tokens, decoded one point after another vs as one sweep: **{cost['speedup']:.2f}×** (median of "
            "rounds: "
            f"{rounds}; {meta['machine']}, {meta['dtype']}, {meta['torch_threads']} torch thread(s))",
        ]
    if summary.get("proxy"):
        lines += ["", "Principle-gain proxy against the checkers, over every answer of the run (AUC: how often a "
                  "passing answer scores above a failing one; 0.5 = chance)", "",
                  "| principle | AUC | passing / failing answers |", "|---|---|---|"]  # fmt: skip
        for name, entry in summary["proxy"].items():
            shown = "—" if entry["auc"] is None else f"{entry['auc']:.2f}"
            lines.append(f"| {name} | {shown} | {entry['passed']} / {entry['failed']} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    rows = summary["principles"]
    figure = Figure(figsize=(8, 3.6), layout="constrained")
    axis = figure.subplots()
    labels = {"tuned": "OPAD, β tuned on the other half", "default": "OPAD, β = 1", "direct": "direct prompting"}
    rate_bars(axis, [row["principle"] for row in rows], {labels[k]: [row[k] for row in rows] for k in labels},
              "held-out adherence (%)")  # fmt: skip
    axis.set_title("Held-out adherence: tuned β vs default vs direct prompting", fontsize=10, loc="left")
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=20, help="AlpacaEval instructions, split in two halves")
    parser.add_argument("--principles", type=int, default=len(CASES), help=f"the first N of {len(CASES)}")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--max-perplexity-ratio", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--no-cost", dest="cost", action="store_false", help="skip the one-by-one timing")
    parser.add_argument("--cost-rounds", type=int, default=2, help="alternating one-by-one/sweep timing rounds")
    parser.add_argument(
        "--cost-only",
        action="store_true",
        help="only the timing: writes OUT-cost.json and replaces the cost in OUT.json/OUT.md",
    )
    parser.add_argument("--out", help="write OUT.json, OUT-samples.jsonl, OUT.md and OUT.png")
    parser.add_argument("--validate-proxy", metavar="OUT",
                        help="instead of running: score OUT-samples.jsonl with the principle-gain proxy and add its "
                        "agreement with the checkers (AUC per principle) to OUT.json and OUT.md")  # fmt: skip
    args = parser.parse_args()
    if args.validate_proxy:
        out = Path(args.validate_proxy)
        summary = json.loads(out.with_suffix(".json").read_text())
        summary["proxy"] = validate_proxy(AlignedLLM.default(device=args.device, dtype=args.dtype),
                                          out.with_name(out.name + "-samples.jsonl"))  # fmt: skip
        out.with_suffix(".json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
        out.with_suffix(".md").write_text(markdown(summary))
        print(markdown(summary))
        return
    summary = run(args)
    if args.cost_only:
        print(json.dumps(summary["cost"], indent=1))
        if args.out:  # the timing replaces the cost of an earlier full run recorded at OUT
            out = Path(args.out)
            out.with_name(out.name + "-cost.json").write_text(json.dumps(summary, indent=1))
            if out.with_suffix(".json").exists():
                recorded = json.loads(out.with_suffix(".json").read_text())
                recorded["cost"], recorded["cost_meta"] = summary["cost"], summary["meta"]
                out.with_suffix(".json").write_text(json.dumps(recorded, indent=1, ensure_ascii=False))
                out.with_suffix(".md").write_text(markdown(recorded))
        return
    table = markdown(summary)
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        samples = summary.pop("samples")
        out.with_suffix(".json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
        with out.with_name(out.name + "-samples.jsonl").open("w", encoding="utf-8") as handle:
            for sample in samples:
                handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
        out.with_suffix(".md").write_text(table)
        plot(summary, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
