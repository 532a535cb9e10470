"""Decode throughput: transformers and the authors' loops side by side with the library's methods.

Every configuration decodes exactly ``--new-tokens`` tokens per prompt (end-of-turn ignored),
same model, dtype and prompts, interleaved round by round so machine noise hits all alike;
the median of ``--repeats`` rounds is reported, with ratios to ``model.generate`` and to the
library's vanilla measured in the same run, and the peak memory of each configuration.

    python benchmarks/throughput.py                                   # bundled model, batch 1 and 8
    python benchmarks/throughput.py --dtype bfloat16 --out docs/results/throughput-cpu-bf16
    python benchmarks/throughput.py --architecture llama-1b --batch-sizes 1,8,32   # random weights (GPU)

Rows:

- ``model.generate`` greedy, and the library's vanilla (same job, must match), timed on
  ``Engine.run`` (one fixed batch on the calling thread) and, for vanilla and OPAD, also through
  ``AlignedLLM.generate`` (the running batch of continuous batching, on its thread);
- OPAD (two contexts in one forward), its peer the OPAD authors' loop (two sequential batch-1
  forwards per step), and transformers' CFG with a negative prompt (``guidance_scale``, its
  second forward sequential) — the closest off-the-shelf two-context decoder;
- PAD with the zero-shot PersRM (two contexts, one forward, k = 10) and its peer the PAD
  authors' loop (no KV cache, one prompt at a time, k = 10);
- AAD on a LoRA pair (adapter on/off in one forward, gated per row; the LoRA is
  random, which does not change the cost), the same through peft's ``adapter_names`` routing
  (its batch split per adapter, what the library did before the gate), and on a two-model pair
  (two forwards per step).

The first run of each configuration (left out of the medians) is reported too: it includes
``torch.compile``'s compilation for the compiled rows. Peak memory: ``torch.cuda.max_memory_allocated``
on CUDA; on CPU the process's peak resident set (VmHWM, reset per configuration through
``/proc/self/clear_refs``), which includes the weights and the Python runtime.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch
from reference_loops import cfg_generate, left_pad, opad_reference_loop, pad_reference_loop
from transformers import AutoModelForCausalLM, LlamaConfig

from aligned_llm import AlignedLLM, DecodeSettings
from aligned_llm.engine import Engine, EngineRequest
from aligned_llm.prompts import normalize_prompts
from aligned_llm.upstream_warnings import peft_wrapping

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
PRINCIPLE = "Be extremely brief: answer in at most ten words."
PROFILE = {"helpful": 1.0, "humor": 1.0}

ARCHITECTURES = {
    # Llama shapes with the bundled tokenizer's vocabulary, random weights: the cost of a decode
    # step does not depend on the weights' values (every row decodes exactly --new-tokens).
    "llama-1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                 "num_attention_heads": 32, "num_key_value_heads": 8},
    "llama-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 8},
}  # fmt: skip

GENERATE, VANILLA = "model.generate (greedy)", "aligned-llm vanilla"
Run = Callable[[], int]


def random_model(architecture: str, llm: AlignedLLM) -> AlignedLLM:
    config = LlamaConfig(
        vocab_size=len(llm.tokenizer), max_position_embeddings=8192, tie_word_embeddings=False,
        bos_token_id=llm.model.config.bos_token_id, eos_token_id=llm.model.config.eos_token_id,
        **ARCHITECTURES[architecture],
    )  # fmt: skip
    with llm.device:
        model = AutoModelForCausalLM.from_config(config, dtype=llm.model.dtype)
    model.generation_config.eos_token_id = llm.model.generation_config.eos_token_id
    return AlignedLLM(model, llm.tokenizer, name=f"{architecture} (random weights)")


def _second_copy(llm: AlignedLLM) -> AlignedLLM:
    """The same weights as a separate model: the cost of AAD with a full SFT reference."""
    return AlignedLLM(llm.model, llm.tokenizer, reference=copy.deepcopy(llm.model))


def lora_pair(llm: AlignedLLM) -> AlignedLLM:
    """The model with a random r=8 LoRA on q/v as the DPO side: the bundled adapter's shape."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    with peft_wrapping():
        model = get_peft_model(copy.deepcopy(llm.model), config)
    return AlignedLLM(model.to(llm.device), llm.tokenizer)


def prompt_rows(llm: AlignedLLM, prompts: list[str], **settings: object) -> list[list[list[int]]]:
    """The token ids of each row the settings' method needs, per prompt, as the library renders them."""
    decode = DecodeSettings(**settings)
    return [llm.encode_rows(normalize_prompts(p)[0][0], decode) for p in prompts]


def hf_generate(llm: AlignedLLM, prompts: list[str], new_tokens: int) -> Run:
    pad = llm.tokenizer.pad_token_id
    ids, mask = left_pad([r[0] for r in prompt_rows(llm, prompts)], pad, llm.device)
    width = ids.shape[1]

    def run() -> int:
        with torch.inference_mode():
            out = llm.model.generate(
                input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, pad_token_id=pad,
            )  # fmt: skip
        return (out.shape[1] - width) * len(prompts)

    return run


def library_tokens(
    llm: AlignedLLM, prompts: list[str], new_tokens: int, kv_store: str = "padded", compile_step: bool = False,
    **settings: object,
) -> Callable[[], list[tuple[int, ...]]]:  # fmt: skip
    """Decode the prompts on ``Engine.run`` (one fixed batch, this thread); each prompt's token ids."""
    decode = DecodeSettings(max_new_tokens=new_tokens, **settings)
    requests = [EngineRequest(rows, new_tokens) for rows in prompt_rows(llm, prompts, **settings)]
    models = {"policy": llm.model, "reference": llm.reference, "reward": llm.reward_model}
    models = {key: model for key, model in models.items() if model is not None}
    engine = Engine(
        models, llm.tokenizer, stop_token_ids=(), pad_token_id=llm.tokenizer.pad_token_id,
        kv_store_name=kv_store, compile_step=compile_step,
    )  # fmt: skip

    def run() -> list[tuple[int, ...]]:
        events = engine.run(requests, llm.method_for(decode))
        return [event.result.token_ids for event in events if event.result is not None]

    return run


def _library(llm: AlignedLLM, prompts: list[str], new_tokens: int, **options: object) -> Run:
    decode = library_tokens(llm, prompts, new_tokens, **options)
    return lambda: sum(len(tokens) for tokens in decode())


def hf_static_compiled(llm: AlignedLLM, prompts: list[str], new_tokens: int) -> Run:
    """``model.generate`` with transformers' static cache, which compiles the forward on CUDA (CUDA graphs)."""
    pad = llm.tokenizer.pad_token_id
    ids, mask = left_pad([r[0] for r in prompt_rows(llm, prompts)], pad, llm.device)
    width = ids.shape[1]

    def run() -> int:
        with torch.inference_mode():
            out = llm.model.generate(
                input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, pad_token_id=pad, cache_implementation="static",
            )  # fmt: skip
        return (out.shape[1] - width) * len(prompts)

    return run


def _running_batch(llm: AlignedLLM, prompts: list[str], new_tokens: int, **settings: object) -> Run:
    """The same job through ``AlignedLLM.generate``: the prompts join the scheduler's running batch."""
    public = AlignedLLM(llm.model, llm.tokenizer, reference=llm.reference, reward_model=llm.reward_model)
    public._engine.stop_token_ids = frozenset()  # exactly new_tokens per prompt, as the other rows

    def run() -> int:
        return sum(result.output_tokens for result in public.generate(prompts, max_new_tokens=new_tokens, **settings))

    return run


def _peft_routed(run: Run) -> Run:
    """The same run with peft's per-adapter batch split (``adapter_names``) instead of the per-row LoRA gate."""

    def routed() -> int:
        with mock.patch("aligned_llm.engine.kv.forward.lora_gate", return_value=None):
            return run()

    return routed


def _pairs(llm: AlignedLLM, prompts: list[str], **settings: object) -> list[tuple[list[int], list[int]]]:
    """(with guidance, without) token ids per prompt, as the library renders them."""
    return [(rows[0], rows[1]) for rows in prompt_rows(llm, prompts, **settings)]


STORE_VARIANTS = {
    "padded": {},
    "static": {"kv_store": "static"},
    "static-compiled": {"kv_store": "static", "compile_step": True},
}
"""The engine variants ``--stores`` adds beside the padded eager engine (vanilla, OPAD, PAD and AAD on each)."""


def store_configurations(
    llm: AlignedLLM, pair: AlignedLLM, prompts: list[str], new_tokens: int, variant: str
) -> dict[str, Run]:
    """The library's methods on one engine variant (``STORE_VARIANTS``)."""
    options = STORE_VARIANTS[variant]
    return {
        f"aligned-llm vanilla [{variant}]": _library(llm, prompts, new_tokens, **options),
        f"aligned-llm OPAD [{variant}]": _library(
            llm, prompts, new_tokens, method="opad", principle=PRINCIPLE, **options
        ),
        f"aligned-llm PAD [{variant}]": _library(llm, prompts, new_tokens, method="pad", profile=PROFILE, **options),
        f"aligned-llm AAD LoRA [{variant}]": _library(pair, prompts, new_tokens, method="aad", **options),
    }


def configurations(
    llm: AlignedLLM,
    pair: AlignedLLM,
    two_models: AlignedLLM,
    prompts: list[str],
    new_tokens: int,
    peers: bool,
    stores: tuple[str, ...] = (),
) -> dict[str, Run]:
    """Every decoder measured at one batch size, in display order."""
    opad_pairs = _pairs(llm, prompts, method="opad", principle=PRINCIPLE)
    pad_pairs = _pairs(llm, prompts, method="pad", profile=PROFILE)
    pad_id = llm.tokenizer.pad_token_id
    configs: dict[str, Run] = {
        GENERATE: hf_generate(llm, prompts, new_tokens),
        VANILLA: _library(llm, prompts, new_tokens),
        "aligned-llm vanilla (running batch)": _running_batch(llm, prompts, new_tokens),
        "aligned-llm OPAD": _library(llm, prompts, new_tokens, method="opad", principle=PRINCIPLE),
        "aligned-llm OPAD (running batch)": _running_batch(
            llm, prompts, new_tokens, method="opad", principle=PRINCIPLE
        ),
    }
    if peers:
        configs["OPAD authors' loop (2 sequential forwards)"] = lambda: opad_reference_loop(
            llm.model, opad_pairs, new_tokens
        )
        configs["transformers CFG (negative prompt)"] = lambda: cfg_generate(llm.model, opad_pairs, new_tokens, pad_id)
    configs["aligned-llm PAD (zero-shot, k=10)"] = _library(llm, prompts, new_tokens, method="pad", profile=PROFILE)
    if peers:
        configs["PAD authors' loop (no KV cache, k=10)"] = lambda: pad_reference_loop(llm.model, pad_pairs, new_tokens)
    configs["aligned-llm AAD (LoRA pair, 1 forward)"] = _library(pair, prompts, new_tokens, method="aad")
    if peers:
        routed = _peft_routed(_library(pair, prompts, new_tokens, method="aad"))
        configs["AAD, LoRA pair via peft adapter_names"] = routed
    configs["aligned-llm AAD (two models)"] = _library(two_models, prompts, new_tokens, method="aad")
    for variant in stores:
        configs.update(store_configurations(llm, pair, prompts, new_tokens, variant))
    return configs


class PeakMemory:
    """Peak memory of one configuration: CUDA allocations, or the CPU process's resident set."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            Path("/proc/self/clear_refs").write_text("5")

    def peak_mib(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc/self/status")


def measure(configs: dict[str, Run], repeats: int, device: torch.device) -> dict[str, dict[str, float]]:
    """Tokens/s (median over rounds) and peak memory per configuration."""
    memory = PeakMemory(device)
    peaks: dict[str, float] = {}
    first: dict[str, float] = {}
    for name, run in configs.items():
        memory.reset()
        started = time.perf_counter()
        run()
        first[name] = time.perf_counter() - started
        peaks[name] = memory.peak_mib()
    times: dict[str, list[float]] = {name: [] for name in configs}
    tokens: dict[str, int] = {}
    for _ in range(repeats):
        for name, run in configs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            tokens[name] = run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - started)
    return {
        name: {"tokens": tokens[name], "tokens_per_s": tokens[name] / statistics.median(times[name]),
               "peak_mib": peaks[name], "first_run_s": first[name]}
        for name in configs
    }  # fmt: skip


def markdown(rows: list[dict[str, object]]) -> str:
    lines = ["| batch | decoder | tokens | tokens/s | × model.generate | × vanilla | peak (MiB) | first run (s) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        lines.append(
            f"| {row['batch']} | {row['config']} | {row['tokens']} | {row['tokens_per_s']:.1f} "
            f"| {row['vs_generate']:.2f} | {row['vs_vanilla']:.2f} | {row['peak_mib']:.0f} | {row['first_run_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, object]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axis = plt.subplots(figsize=(10, 4.8))
    for name in dict.fromkeys(str(row["config"]) for row in rows):
        points = [(row["batch"], row["tokens_per_s"]) for row in rows if row["config"] == name]
        style = "--" if "authors" in name or "transformers" in name or name == GENERATE else "-"
        axis.plot(*zip(*points, strict=True), style, marker="o", label=name)
    axis.set(xlabel="batch size (prompts)", ylabel="tokens/s", title=title, xscale="log", yscale="log")
    batches = sorted({int(row["batch"]) for row in rows})
    axis.set_xticks(batches, labels=[str(batch) for batch in batches])
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.grid(True, which="both", alpha=0.3)
    axis.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axis.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="local folder or hub id (default: the bundled SmolLM2-135M-Instruct)")
    parser.add_argument(
        "--architecture", choices=sorted(ARCHITECTURES), help="a larger Llama shape, random weights, to show scaling"
    )
    parser.add_argument("--device")
    parser.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-peers", action="store_true", help="skip the authors' loops and transformers' CFG")
    parser.add_argument(
        "--stores", default="", help=f"engine variants to add, comma-separated: {', '.join(STORE_VARIANTS)}"
    )
    parser.add_argument("--out", help="write OUT.json, OUT.md and OUT.png (e.g. docs/results/throughput-cpu-bf16)")
    args = parser.parse_args()

    options = {"device": args.device, "dtype": args.dtype}
    llm = AlignedLLM.from_pretrained(args.model, **options) if args.model else AlignedLLM.default(**options)
    if args.architecture:
        llm = random_model(args.architecture, llm)
    pair, two_models = lora_pair(llm), _second_copy(llm)
    parameters = sum(p.numel() for p in llm.model.parameters())
    header = (f"model={llm.name} ({parameters / 1e6:.0f}M params) device={llm.device} dtype={llm.model.dtype} "
              f"torch={torch.__version__} threads={torch.get_num_threads()} "
              f"cpu={platform.processor() or platform.machine()}"
              + (f" gpu={torch.cuda.get_device_name(llm.device)}" if llm.device.type == "cuda" else ""))  # fmt: skip
    print(header, flush=True)
    rows: list[dict[str, object]] = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
        stores = tuple(name for name in args.stores.split(",") if name)
        configs = configurations(llm, pair, two_models, prompts, args.new_tokens, not args.no_peers, stores)
        results = measure(configs, args.repeats, llm.device)
        for name, result in results.items():
            rows.append({"batch": batch, "config": name, **result,
                         "vs_generate": result["tokens_per_s"] / results[GENERATE]["tokens_per_s"],
                         "vs_vanilla": result["tokens_per_s"] / results[VANILLA]["tokens_per_s"]})  # fmt: skip
        print(markdown([row for row in rows if row["batch"] == batch]), flush=True)
        if args.out:  # after every batch size, so a run cut short keeps what it measured
            write(Path(args.out), header, args, rows, llm)
    print(f"{header}\n\n{markdown(rows)}")


def write(out: Path, header: str, args: argparse.Namespace, rows: list[dict[str, object]], llm: AlignedLLM) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    meta = {"header": header, "new_tokens": args.new_tokens, "repeats": args.repeats}
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(f"`{header}`, {args.new_tokens} new tokens per prompt\n\n{table}")
    plot(rows, f"{llm.name}, {llm.device.type}, {str(llm.model.dtype).removeprefix('torch.')}", out.with_suffix(".png"))


if __name__ == "__main__":
    main()
