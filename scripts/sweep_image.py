"""Render docs/images/sweep.png: the sweep of notebooks/tuning.ipynb (OPAD's β, three prompts, a word limit).

    python scripts/sweep_image.py [--out docs/images/sweep.png]

Runs on the bundled model on the CPU (under a minute).
"""

from __future__ import annotations

import argparse

from aligned_llm import AlignedLLM, sweep
from aligned_llm.sweeps import checkers

PROMPTS = ["Tell me about the moon.", "Why is the sky blue?", "Name three rivers."]
PRINCIPLE = "Be extremely brief: answer in at most ten words."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/images/sweep.png")
    args = parser.parse_args()
    llm = AlignedLLM.default(device="cpu")
    result = sweep(llm, PROMPTS, {"beta": [0.5, 1, 2, 4]}, method="opad", principle=PRINCIPLE,
                   adherence=checkers.max_words(10), baselines=("direct",), max_new_tokens=32)  # fmt: skip
    print(result.table())
    title = f"OPAD on SmolLM2-135M, {len(PROMPTS)} prompts: “{PRINCIPLE}”"
    result.figure(title=title).savefig(args.out, dpi=110)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
