"""Per-step cost of a grammar: the same decode with and without one, side by side in one run.

The bundled model decodes exactly ``--new-tokens`` tokens per prompt (end-of-turn ignored, and the
grammars compiled with a stop token the model never chooses, so that they never end early), batch 1 and 8, greedy
vanilla. Grammars: ``tools-auto`` (free text that may open a tool call: what an agent turn pays)
and ``json`` (a JSON-schema answer: an array of at least 64 strings, so that every step is inside
the JSON). The per-step time is (time for N tokens − time for 1 token) / (N − 1), the median of
``--repeats`` interleaved rounds; the ratio is steps per second with the grammar over without
(1.0 = free, target ≥ 0.9).

    python benchmarks/grammar_cost.py --out docs/results/grammar-cost-cpu
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from throughput import PROMPTS

from aligned_llm import AlignedLLM, DecodeSettings
from aligned_llm.answer.constraint import Constraint
from aligned_llm.answer.grammar import grammars_for
from aligned_llm.engine import Engine
from aligned_llm.prompts import normalize_prompts

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
NOTES = {
    "type": "object",
    "properties": {"notes": {"type": "array", "items": {"type": "string"}, "minItems": 64}},
    "required": ["notes"],
}
GRAMMARS = {
    "none": {},
    "tools-auto": {"tools": TOOLS},
    "json": {"response_format": {"type": "json_schema", "json_schema": {"name": "notes", "schema": NOTES}}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args()
    llm = AlignedLLM.default(device="cpu")
    engine = Engine({"policy": llm.model}, llm.tokenizer, stop_token_ids=(), pad_token_id=llm.tokenizer.pad_token_id)
    vocab = llm.model.get_output_embeddings().weight.shape[0]
    never_chosen = (vocab - 1,)  # xgrammar needs a stop token; the model's own would end the grammars early
    grammars = grammars_for(llm.tokenizer, vocab, stop_token_ids=never_chosen)
    method = llm.method_for(DecodeSettings())

    def requests(batch: int, name: str, tokens: int) -> list:
        settings = DecodeSettings(max_new_tokens=tokens, **GRAMMARS[name])
        conversations, _ = normalize_prompts(PROMPTS[:batch])
        built = llm._requests(conversations, settings, method)
        if name == "none":
            return built
        constraint = Constraint(grammars.compile(settings.output, llm.answer_plan(settings).fmt), whole=name == "json")
        return [replace(request, constraint=constraint) for request in built]

    def seconds(batch: int, name: str, tokens: int) -> float:
        prepared = requests(batch, name, tokens)
        started = time.perf_counter()
        with torch.inference_mode():
            for _ in engine.run(prepared, method):
                pass
        return time.perf_counter() - started

    rows = []
    for batch in [int(size) for size in args.batch_sizes.split(",")]:
        for name in GRAMMARS:
            seconds(batch, name, 2)
        samples: dict[str, list[float]] = {name: [] for name in GRAMMARS}
        for _ in range(args.repeats):
            for name in GRAMMARS:
                per_step = (seconds(batch, name, args.new_tokens) - seconds(batch, name, 1)) / (args.new_tokens - 1)
                samples[name].append(per_step)
        base = statistics.median(samples["none"])
        for name in GRAMMARS:
            step = statistics.median(samples[name])
            row = {"batch": batch, "grammar": name, "ms_per_step": 1000 * step, "ratio": base / step}
            rows.append(row)
            print(f"batch {batch} {name:10s} {row['ms_per_step']:7.1f} ms/step  ratio {row['ratio']:.2f}", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
        settings = {"new_tokens": args.new_tokens, "repeats": args.repeats}
        report = {"model": llm.name, "machine": machine, **settings, "rows": rows}
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        lines = [
            f"# Grammar cost per step ({llm.name}, CPU, fp32, greedy vanilla, {args.new_tokens} tokens, "
            f"median of {args.repeats})",
            "",
            "| batch | grammar | ms / step | steps/s ratio to no grammar |",
            "|---|---|---|---|",
        ]
        lines += [f"| {r['batch']} | {r['grammar']} | {r['ms_per_step']:.1f} | {r['ratio']:.2f} |" for r in rows]
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
