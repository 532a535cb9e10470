"""Every GPU figure of the engine in one call of at most ~8 minutes; on a CPU the same script runs its CPU rows.

    python benchmarks/gpu.py --out $OUT/gpu          # on the lent GPU: one call, JSON/Markdown after every row
    python benchmarks/gpu.py --out /tmp/gpu-cpu      # on a CPU: bundled model, batch 1, the GPU-only rows skipped

Per model (the bundled SmolLM2-135M, and a 1.2B Llama shape with random weights), bf16 on CUDA,
for each batch size (1, 8, 32 on CUDA):

- ``model.generate`` eager (dynamic cache) and, GPU only, transformers' static cache (which
  compiles the forward with CUDA graphs on CUDA);
- the library's vanilla on the padded eager engine and on the static store, eager and (GPU only)
  compiled (``compile_step``);
- at batch 1 and 8: OPAD, PAD (zero-shot PersRM, k=10) and AAD (LoRA pair, gated) on the fastest
  library engine, as ratios to its vanilla;
- token equality of the compiled static step and the padded eager engine on the same prompts;
- the fraction of the memory-bandwidth roofline at each row: (weight bytes + KV bytes read per
  step) ÷ step time ÷ the card's bandwidth.

Rows are interleaved round by round (``--repeats``) and the median is kept; ratios are within one
run. ``--budget-s`` stops starting new rows once spent, keeping what was measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from throughput import (
    PROMPTS,
    hf_generate,
    hf_static_compiled,
    library_tokens,
    lora_pair,
    markdown,
    measure,
    random_model,
    store_configurations,
)

from aligned_llm import AlignedLLM

BANDWIDTH_BYTES_PER_S = {"H200": 4.8e12, "H100 PCIe": 2.0e12, "H100": 3.35e12, "A100": 2.0e12, "L4": 3.0e11}
"""Peak memory bandwidth by card name (first match wins; ``--bandwidth`` overrides)."""


def bandwidth(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((value for key, value in BANDWIDTH_BYTES_PER_S.items() if key in name), None)


def bytes_per_step(llm: AlignedLLM, rows: int, context: int) -> float:
    """Weights read once per step, plus every row's keys and values over its context."""
    config = llm.model.config
    weights = sum(p.numel() * p.element_size() for p in llm.model.parameters())
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = next(llm.model.parameters()).element_size()
    kv = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * element * rows * context
    return float(weights + kv)


def run_model(llm: AlignedLLM, args: argparse.Namespace, cuda: bool, deadline: float, rows: list[dict]) -> None:
    """Every row for one model, appended to ``rows`` (and written) as it is measured."""
    pair = lora_pair(llm)
    peak = bandwidth(llm.device, args.bandwidth)
    prompt_tokens = len(llm.tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], tokenize=True))
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        if time.monotonic() > deadline:
            print(f"budget spent: skipping batch {batch} of {llm.name}", flush=True)
            return
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
        configs = {"model.generate eager": hf_generate(llm, prompts, args.new_tokens)}
        if cuda:
            configs["model.generate static cache + compile"] = hf_static_compiled(llm, prompts, args.new_tokens)
        library = {"padded": {}, "static": {"kv_store": "static"}}
        if cuda:
            library["static-compiled"] = {"kv_store": "static", "compile_step": True}
        for variant, options in library.items():
            decode = library_tokens(llm, prompts, args.new_tokens, **options)
            configs[f"aligned-llm vanilla [{variant}]"] = lambda decode=decode: sum(len(t) for t in decode())
        fastest = "static-compiled" if cuda else "padded"
        if batch <= 8:
            methods = store_configurations(llm, pair, prompts, args.new_tokens, fastest)
            configs.update({name: run for name, run in methods.items() if "vanilla" not in name})
        configs = warmed(configs, llm.name, batch, rows)
        results = measure(configs, args.repeats, llm.device)
        baseline = results["model.generate eager"]["tokens_per_s"]
        vanilla_name = f"aligned-llm vanilla [{fastest}]"
        vanilla = results[vanilla_name if vanilla_name in results else "aligned-llm vanilla [padded]"]["tokens_per_s"]
        context = prompt_tokens + args.new_tokens // 2
        for name, result in results.items():
            method_rows = 2 if any(m in name for m in ("OPAD", "PAD", "AAD")) else 1
            step_s = batch / result["tokens_per_s"]
            roofline = None if peak is None else bytes_per_step(llm, batch * method_rows, context) / step_s / peak
            rows.append({"model": llm.name, "batch": batch, "config": name, **result,
                         "vs_generate": result["tokens_per_s"] / baseline,
                         "vs_vanilla": result["tokens_per_s"] / vanilla, "roofline": roofline})  # fmt: skip
        if cuda and "aligned-llm vanilla [static-compiled]" in configs:
            eager = library_tokens(llm, prompts, args.new_tokens)()
            compiled = library_tokens(llm, prompts, args.new_tokens, kv_store="static", compile_step=True)()
            same = sum(a == b for a, b in zip(eager, compiled, strict=True))
            rows.append({"model": llm.name, "batch": batch, "config": "token equality compiled vs eager",
                         "equal_prompts": same, "prompts": len(prompts)})  # fmt: skip
        print(markdown([row for row in rows if row.get("batch") == batch and "tokens_per_s" in row]), flush=True)
        write(args, rows)


def warmed(configs: dict, model: str, batch: int, rows: list[dict]) -> dict:
    """Run each configuration once (compiling what compiles); one that fails is reported and left out."""
    kept = {}
    for name, run in configs.items():
        started = time.monotonic()
        try:
            run()
        except Exception as error:  # a GPU run is scarce: one failing row must not lose the others
            rows.append({"model": model, "batch": batch, "config": name, "error": f"{type(error).__name__}: {error}"})
            print(f"{name}: {type(error).__name__}: {error}", flush=True)
            continue
        print(f"warmed {name} in {time.monotonic() - started:.1f} s", flush=True)
        kept[name] = run
    return kept


def write(args: argparse.Namespace, rows: list[dict]) -> None:
    if not args.out:
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"header": args.header, "rows": rows}, indent=2) + "\n")
    lines = [
        f"`{args.header}`, {args.new_tokens} new tokens per prompt",
        "",
        "| model | batch | decoder | tokens/s | × generate | × vanilla | roofline |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['batch']} | {row['config']}: failed ({row['error'][:80]}) | | | | |")
            continue
        if "tokens_per_s" not in row:
            equal = f"{row['equal_prompts']}/{row['prompts']}"
            lines.append(f"| {row['model']} | {row['batch']} | {row['config']}: {equal} | | | | |")
            continue
        roofline = "—" if row["roofline"] is None else f"{row['roofline']:.0%}"
        lines.append(f"| {row['model']} | {row['batch']} | {row['config']} | {row['tokens_per_s']:.1f} "
                     f"| {row['vs_generate']:.2f} | {row['vs_vanilla']:.2f} | {roofline} |")  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write OUT.json and OUT.md after every batch size")
    parser.add_argument("--batch-sizes", help="default: 1,8,32 on CUDA, 1 on a CPU")
    parser.add_argument("--new-tokens", type=int, help="default: 64 on CUDA, 8 on a CPU")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=None, help="bundled,llama-1b (default on CUDA; bundled on a CPU)")
    parser.add_argument("--bandwidth", type=float, help="the card's peak bytes/s (default: from its name)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no new row after this many seconds")
    args = parser.parse_args()
    started = time.monotonic()
    cuda = torch.cuda.is_available()
    args.batch_sizes = args.batch_sizes or ("1,8,32" if cuda else "1")
    args.new_tokens = args.new_tokens or (64 if cuda else 8)
    args.models = args.models or ("bundled,llama-1b" if cuda else "bundled")
    torch._dynamo.config.recompile_limit = 64  # one compiled graph per (model, row bucket, length bucket)
    bundled = AlignedLLM.default(dtype=torch.bfloat16 if cuda else torch.float32)
    args.header = (f"device={bundled.device} dtype={bundled.model.dtype} torch={torch.__version__} "
                   f"cpu={platform.processor() or platform.machine()}"
                   + (f" gpu={torch.cuda.get_device_name(bundled.device)}" if cuda else ""))  # fmt: skip
    print(args.header, flush=True)
    rows: list[dict] = []
    for name in args.models.split(","):
        llm = bundled if name == "bundled" else random_model(name, bundled)
        run_model(llm, args, cuda, started + args.budget_s, rows)
    write(args, rows)
    print(f"done in {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
