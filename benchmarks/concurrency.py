"""Concurrent callers of one AlignedLLM: continuous batching vs per-call batching, side by side in one run.

N caller threads share one ``AlignedLLM`` (the bundled model with its DPO adapter, so AAD is
among the methods); each streams ``--requests`` requests one after another, cycling through
methods (vanilla, direct prompting, OPAD, linear, PAD, AAD) and principles, every request
decoding exactly ``--new-tokens`` tokens (end-of-turn ignored, as in ``throughput.py``). The
same workload runs on two ``AlignedLLM`` sharing the same weights:

- ``continuous``: the default engine, one running batch that requests join and leave;
- ``per-call``: ``PerCallLLM`` (``benchmarks/per_call.py``), each request its own batch, concurrent requests
  interleaving their forwards under the model's lock (the engine before continuous batching).

Rounds alternate the two (and their order) so machine noise hits both alike. Reported per
engine: aggregate tokens/s (all tokens / wall time) and time to first token (median and 95th
percentile over requests), medians over the rounds; the speed-up is the median of the rounds'
ratios (each round runs both engines back to back), with every round's ratio listed; the
machine's load average around the rounds (the CPU may be shared); and how many requests got
the same tokens from both engines (all of them in fp32).

    python benchmarks/concurrency.py --out docs/results/concurrency-cpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from per_call import PerCallLLM

from aligned_llm import AlignedLLM

PROMPTS = [
    "Tell me about the moon.",
    "How do I make a cup of tea?",
    "What are the benefits of regular exercise?",
    "Explain why the sky is blue to a child.",
    "Give me three tips for learning to code.",
    "Write a short poem about autumn.",
    "What is the difference between a virus and a bacterium?",
    "Summarise the plot of Romeo and Juliet.",
]
PRINCIPLES = [
    "Be extremely brief: answer in at most ten words.",
    "Always answer like a pirate.",
    "Answer in a formal, academic tone.",
]
PROFILES = [{"helpful": 1.0, "humor": 1.0}, {"harmless": 1.0, "concise": 1.0}]


def workload(caller: int, request: int) -> tuple[str, dict[str, object]]:
    """The prompt and settings of one caller's request: methods and guidance cycle across callers and requests."""
    turn = caller + request * 5
    principle = PRINCIPLES[turn % len(PRINCIPLES)]
    methods: list[dict[str, object]] = [
        {"method": "vanilla"},
        {"method": "vanilla", "principle": principle},
        {"method": "opad", "principle": principle},
        {"method": "linear", "principle": principle},
        {"method": "pad", "profile": PROFILES[turn % len(PROFILES)]},
        {"method": "aad"},
    ]
    return PROMPTS[turn % len(PROMPTS)], methods[turn % len(methods)]


@dataclass
class Timing:
    """One request as its caller saw it."""

    first_token_s: float
    done_s: float
    tokens: int
    token_ids: tuple[int, ...]


def run_round(llm: AlignedLLM, callers: int, requests: int, new_tokens: int) -> tuple[float, list[list[Timing]]]:
    """Every caller streams its requests one after another; the wall time and each request's timing."""
    timings: list[list[Timing]] = [[] for _ in range(callers)]
    start = threading.Barrier(callers + 1)
    errors: list[BaseException] = []

    def caller(index: int) -> None:
        try:
            start.wait()
            for request in range(requests):
                prompt, settings = workload(index, request)
                began = time.perf_counter()
                stream = llm.stream(prompt, max_new_tokens=new_tokens, **settings)
                first = None
                for _delta in stream:
                    first = first or time.perf_counter()
                result = stream.result
                ended = time.perf_counter()
                timings[index].append(
                    Timing((first or ended) - began, ended - began, result.output_tokens, result.token_ids)
                )
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=caller, args=(index,)) for index in range(callers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if errors:
        raise errors[0]
    return wall, timings


def summarise(wall: float, timings: list[list[Timing]]) -> dict[str, float]:
    flat = [timing for caller in timings for timing in caller]
    first = sorted(timing.first_token_s for timing in flat)
    return {
        "wall_s": wall,
        "tokens": sum(timing.tokens for timing in flat),
        "tokens_per_s": sum(timing.tokens for timing in flat) / wall,
        "ttft_median_s": statistics.median(first),
        "ttft_p95_s": first[min(len(first) - 1, round(0.95 * (len(first) - 1)))],
    }


def measure(engines: dict[str, AlignedLLM], callers: int, args: argparse.Namespace) -> dict[str, object]:
    """Alternate the engines round by round; the median round of each, the load, and whether tokens agree."""
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in engines}
    tokens: dict[str, list[tuple[int, ...]]] = {}
    loads = [os.getloadavg()[0]]
    for repeat in range(args.repeats):
        order = list(engines) if repeat % 2 == 0 else list(reversed(engines))
        for name in order:
            wall, timings = run_round(engines[name], callers, args.requests, args.new_tokens)
            rounds[name].append(summarise(wall, timings))
            tokens[name] = [timing.token_ids for caller in timings for timing in caller]
            loads.append(os.getloadavg()[0])
            print(f"  {callers} callers, {name}: {rounds[name][-1]['tokens_per_s']:.1f} tok/s", flush=True)
    medians = {
        name: {key: statistics.median(run[key] for run in runs) for key in runs[0]} for name, runs in rounds.items()
    }
    names = list(engines)
    ratios = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(rounds[names[0]], rounds[names[1]], strict=True)]
    same = sum(a == b for a, b in zip(tokens[names[0]], tokens[names[1]], strict=True))
    return {
        "callers": callers,
        "engines": medians,
        "rounds": rounds,
        "speedup": statistics.median(ratios),
        "speedup_per_round": ratios,
        "load_average": loads,
        "identical_requests": same,
        "requests": len(tokens[names[0]]),
    }


def markdown(rows: list[dict[str, object]]) -> str:
    lines = [
        "| callers | engine | tokens | aggregate tokens/s | × per-call (rounds) | TTFT median (s) | TTFT p95 (s) "
        "| same tokens | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        load = f"{min(row['load_average']):.1f}–{max(row['load_average']):.1f}"
        same = f"{row['identical_requests']}/{row['requests']}"
        for name, result in row["engines"].items():
            ratio = "1.00"
            if name == "continuous":
                ratio = f"{row['speedup']:.2f} ({', '.join(f'{r:.2f}' for r in row['speedup_per_round'])})"
            lines.append(
                f"| {row['callers']} | {name} | {result['tokens']:.0f} | {result['tokens_per_s']:.1f} | {ratio} "
                f"| {result['ttft_median_s']:.2f} | {result['ttft_p95_s']:.2f} | {same} | {load} |"
            )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, object]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, ttft) = plt.subplots(1, 2, figsize=(10, 4))
    callers = [int(row["callers"]) for row in rows]
    for name in rows[0]["engines"]:
        throughput.plot(callers, [row["engines"][name]["tokens_per_s"] for row in rows], marker="o", label=name)
        ttft.plot(callers, [row["engines"][name]["ttft_median_s"] for row in rows], marker="o", label=name)
    throughput.set(xlabel="concurrent callers", ylabel="aggregate tokens/s", xscale="log", title=title)
    ttft.set(xlabel="concurrent callers", ylabel="median time to first token (s)", xscale="log", yscale="log")
    for axis in (throughput, ttft):
        axis.set_xticks(callers, labels=[str(count) for count in callers])
        axis.minorticks_off()
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device")
    parser.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--callers", default="1,4,16")
    parser.add_argument("--requests", type=int, default=2, help="requests per caller, one after another")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--out", help="write OUT.json, OUT.md and OUT.png (e.g. docs/results/concurrency-cpu)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    pair = AlignedLLM.default(adapter="bundled", device=args.device, dtype=args.dtype)
    engines = {
        "continuous": pair,
        "per-call": PerCallLLM(pair.model, pair.tokenizer, name=pair.name),
    }
    for llm in engines.values():
        llm._engine.stop_token_ids = frozenset()  # every request decodes exactly --new-tokens tokens
    header = (
        f"model={pair.name} + bundled DPO adapter, device={pair.device} dtype={pair.model.dtype} "
        f"torch={torch.__version__} threads={torch.get_num_threads()} cores={os.cpu_count()} "
        f"cpu={platform.processor() or platform.machine()}"
    )
    print(header, flush=True)
    rows = []
    for callers in (int(count) for count in args.callers.split(",")):
        rows.append(measure(engines, callers, args))
        print(markdown(rows[-1:]), flush=True)
        if args.out:
            write(Path(args.out), header, args, rows, pair)
    print(f"{header}\n\n{markdown(rows)}")


def write(out: Path, header: str, args: argparse.Namespace, rows: list[dict[str, object]], llm: AlignedLLM) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"header": header, "new_tokens": args.new_tokens, "requests_per_caller": args.requests,
            "repeats": args.repeats}  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        f"`{header}`, {args.requests} requests per caller, {args.new_tokens} new tokens each\n\n{markdown(rows)}"
    )
    plot(rows, f"{llm.name}, {llm.device.type}, {str(llm.model.dtype).removeprefix('torch.')}", out.with_suffix(".png"))


if __name__ == "__main__":
    main()
