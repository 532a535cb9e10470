"""Decode throughput: transformers' ``model.generate`` greedy vs the library's vanilla and methods.

Every configuration decodes exactly ``--new-tokens`` tokens per prompt (end-of-turn ignored),
same model, dtype and prompts, interleaved round by round so machine noise hits all alike;
the median of ``--repeats`` rounds is reported, with ratios to ``model.generate`` measured
in the same run.

    python benchmarks/throughput.py                        # bundled model, batch 1 and 8
    python benchmarks/throughput.py --dtype bfloat16 --batch-sizes 1,4,8 --new-tokens 128

Rows: ``model.generate`` greedy; the library's vanilla; OPAD (two contexts, one forward);
PAD with the zero-shot PersRM (two contexts, one forward, k = 10); AAD on a LoRA pair (adapter
on/off in one forward via peft ``adapter_names``; the LoRA is random, which does not change
the cost) and on a two-model pair (the model loaded twice, two forwards per step).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch

from aligned_llm import AlignedLLM, DecodeSettings
from aligned_llm.engine import Engine, EngineRequest
from aligned_llm.loading import bundled_model_dir
from aligned_llm.prompts import normalize_prompts

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


def _lora_pair(llm: AlignedLLM) -> AlignedLLM:
    """The model with a random r=8 LoRA on q/v as the DPO side: the bundled adapter's shape."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return AlignedLLM(get_peft_model(llm.model, config), llm.tokenizer)


def _hf_generate(llm: AlignedLLM, prompts: list[str], new_tokens: int) -> Callable[[], int]:
    rows = [llm.encode_rows(normalize_prompts(p)[0][0], DecodeSettings())[0] for p in prompts]
    width = max(map(len, rows))
    pad = llm.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=llm.device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=llm.device)

    def run() -> int:
        with torch.inference_mode():
            out = llm.model.generate(
                input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, pad_token_id=pad,
            )  # fmt: skip
        return (out.shape[1] - width) * len(prompts)

    return run


def _library(llm: AlignedLLM, prompts: list[str], new_tokens: int, **settings: object) -> Callable[[], int]:
    decode = DecodeSettings(max_new_tokens=new_tokens, **settings)
    requests = [EngineRequest(llm.encode_rows(normalize_prompts(p)[0][0], decode), new_tokens) for p in prompts]
    models = {"policy": llm.model, "reference": llm.reference, "reward": llm.reward_model}
    models = {key: model for key, model in models.items() if model is not None}
    engine = Engine(models, llm.tokenizer, stop_token_ids=(), pad_token_id=llm.tokenizer.pad_token_id)

    def run() -> int:
        return sum(e.result.output_tokens for e in engine.run(requests, llm.method_for(decode)) if e.result is not None)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="local folder or hub id (default: the bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--device")
    parser.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()

    options = {"device": args.device, "dtype": args.dtype}
    llm = AlignedLLM.from_pretrained(args.model, **options) if args.model else AlignedLLM.default(**options)
    source = args.model or bundled_model_dir()
    adapter_pair = _lora_pair(AlignedLLM.from_pretrained(source, **options))
    model_pair = AlignedLLM.from_pretrained(source, reference=source, **options)
    print(f"model={llm.name} device={llm.device} dtype={llm.model.dtype} torch={torch.__version__} "
          f"threads={torch.get_num_threads()} cpu={platform.processor() or platform.machine()}")  # fmt: skip
    rows = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
        configs = {
            "model.generate (greedy)": _hf_generate(llm, prompts, args.new_tokens),
            "aligned-llm vanilla": _library(llm, prompts, args.new_tokens),
            "aligned-llm OPAD": _library(llm, prompts, args.new_tokens, method="opad", principle=PRINCIPLE),
            "aligned-llm PAD (zero-shot, k=10)": _library(llm, prompts, args.new_tokens, method="pad", profile=PROFILE),
            "aligned-llm AAD (LoRA pair, 1 forward)": _library(adapter_pair, prompts, args.new_tokens, method="aad"),
            "aligned-llm AAD (two models)": _library(model_pair, prompts, args.new_tokens, method="aad"),
        }
        for run in configs.values():
            run()
        times: dict[str, list[float]] = {name: [] for name in configs}
        tokens: dict[str, int] = {}
        for _ in range(args.repeats):
            for name, run in configs.items():
                if llm.device.type == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
                tokens[name] = run()
                if llm.device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - started)
        rates = {name: tokens[name] / statistics.median(times[name]) for name in configs}
        for name, rate in rates.items():
            rows.append({"batch": batch, "config": name, "tokens": tokens[name], "tokens_per_s": rate,
                         "vs_generate": rate / rates["model.generate (greedy)"],
                         "vs_vanilla": rate / rates["aligned-llm vanilla"]})  # fmt: skip
    print("\n| batch | decoder | tokens | tokens/s | × model.generate | × vanilla |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['batch']} | {row['config']} | {row['tokens']} | {row['tokens_per_s']:.1f} "
              f"| {row['vs_generate']:.2f} | {row['vs_vanilla']:.2f} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": str(llm.device), "dtype": str(llm.model.dtype), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
