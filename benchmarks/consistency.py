"""Correctness on the device at hand (the GPU check): batching must not change any method's tokens.

The test suite proves the methods token for token on CPU. This script repeats the two checks
that hardware can break — kernels that differ with batch shape or padding — on whatever
device it runs on, with the bundled model:

- the library's vanilla decoding equals ``model.generate`` greedy, prompt by prompt;
- each method (OPAD, Linear, PAD zero-shot, AAD on the bundled pair) decoding 8 prompts as
  one padded batch gives the same tokens as decoding each prompt alone.

It prints, per check, how many prompts match exactly and the first differing step otherwise.
In fp32 everything should match; in bf16 a near-tie can flip when the batch shape changes
(the sums are ordered differently), which this script reports rather than hides.

    python benchmarks/consistency.py --device cuda --dtype float32
"""

from __future__ import annotations

import argparse
import json

import torch
from throughput import PRINCIPLE, PROFILE, PROMPTS, prompt_rows

from aligned_llm import AlignedLLM


def first_difference(a: tuple[int, ...], b: tuple[int, ...]) -> int | None:
    for step, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return step
    return None if len(a) == len(b) else min(len(a), len(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    llm = AlignedLLM.default(device=args.device, dtype=args.dtype)
    pair = AlignedLLM.default(device=args.device, dtype=args.dtype, adapter="bundled")
    results = {"device": str(llm.device), "dtype": args.dtype, "checks": {}}
    if llm.device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(llm.device)

    mismatches = []
    for prompt in PROMPTS:
        ours = llm.generate(prompt, max_new_tokens=args.new_tokens)
        ids = torch.tensor([prompt_rows(llm, [prompt])[0][0]], device=llm.device)
        with torch.inference_mode():
            out = llm.model.generate(input_ids=ids, do_sample=False, max_new_tokens=args.new_tokens,
                                     pad_token_id=llm.tokenizer.pad_token_id)  # fmt: skip
        theirs = tuple(out[0, ids.shape[1] :].tolist())
        step = first_difference(ours.token_ids, theirs[: len(ours.token_ids)])
        if step is not None:
            mismatches.append({"prompt": prompt, "first_difference": step})
    results["checks"]["vanilla == model.generate"] = {"prompts": len(PROMPTS), "mismatches": mismatches}

    methods = {
        "opad": (llm, {"method": "opad", "principle": PRINCIPLE}),
        "linear": (llm, {"method": "linear", "principle": PRINCIPLE}),
        "pad": (llm, {"method": "pad", "profile": PROFILE}),
        "aad": (pair, {"method": "aad"}),
    }
    for name, (model, settings) in methods.items():
        batched = model.generate(PROMPTS, max_new_tokens=args.new_tokens, **settings)
        mismatches = []
        for prompt, together in zip(PROMPTS, batched, strict=True):
            alone = model.generate(prompt, max_new_tokens=args.new_tokens, **settings)
            step = first_difference(together.token_ids, alone.token_ids)
            if step is not None:
                mismatches.append({"prompt": prompt, "first_difference": step})
        results["checks"][f"{name}: batch of {len(PROMPTS)} == each alone"] = {
            "prompts": len(PROMPTS),
            "mismatches": mismatches,
        }
    for check, outcome in results["checks"].items():
        matched = outcome["prompts"] - len(outcome["mismatches"])
        print(f"{check}: {matched}/{outcome['prompts']} identical", outcome["mismatches"] or "")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
