"""The ``aligned-llm`` command: generate with one method, or compare methods side by side."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aligned_llm.errors import AlignedLLMError
from aligned_llm.llm import AlignedLLM
from aligned_llm.methods import METHODS
from aligned_llm.settings import DEFAULT_MAX_NEW_TOKENS, DecodeSettings

COMPARE_COLUMNS = {
    "vanilla": ("vanilla", False),
    "direct": ("vanilla", True),
    "opad": ("opad", True),
    "linear": ("linear", True),
}
"""compare's columns: name → (method, whether the principle is given)."""


def _window(value: str) -> str | int:
    return 1 if value == "1" else value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aligned-llm", description="Decoding-time alignment of a local LM.")
    commands = parser.add_subparsers(dest="command", required=True)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("prompt", help="the user message")
    shared.add_argument("--model", help="local folder or hub id (default: the bundled SmolLM2-135M-Instruct)")
    shared.add_argument("--device", help="cpu, cuda, cuda:1, … (default: CUDA when available)")
    shared.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="default: bf16 on CUDA, fp32 on CPU"
    )
    shared.add_argument("--principle", help="the principle to follow (OPAD, linear, direct prompting)")
    shared.add_argument("--system", help="a system message to put before the prompt")
    shared.add_argument("--beta", type=float, default=1.0, help="OPAD strength: larger is weaker (default 1.0)")
    shared.add_argument("--opad-window", type=_window, default="reference", help="reference (default), last or 1")
    shared.add_argument("--rho", type=float, default=2.0, help="linear-alignment strength (default 2.0)")
    shared.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    shared.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    shared.add_argument("--top-p", type=float, default=1.0)
    shared.add_argument("--seed", type=int)
    shared.add_argument("--stop", action="append", help="a stop string (repeatable)")

    generate = commands.add_parser("generate", parents=[shared], help="decode with one method, streaming the text")
    generate.add_argument("--method", choices=sorted(METHODS), default="vanilla")

    compare = commands.add_parser("compare", parents=[shared], help="decode with several methods, side by side")
    compare.add_argument(
        "--methods",
        default="vanilla,direct,opad",
        help=f"comma-separated columns among {', '.join(COMPARE_COLUMNS)} (default: vanilla,direct,opad); "
        "vanilla has no principle, direct is vanilla with the principle in context",
    )
    return parser


def _load(args: argparse.Namespace, console: Console) -> AlignedLLM:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    options = {"device": args.device, "dtype": args.dtype}
    with console.status(f"Loading {args.model or 'the bundled SmolLM2-135M-Instruct'}…"):
        return AlignedLLM.from_pretrained(args.model, **options) if args.model else AlignedLLM.default(**options)


def _prompt(args: argparse.Namespace) -> str | list[dict[str, str]]:
    if args.system is None:
        return args.prompt
    return [{"role": "system", "content": args.system}, {"role": "user", "content": args.prompt}]


def _settings(args: argparse.Namespace, method: str, with_principle: bool) -> dict[str, object]:
    return {
        "method": method,
        "principle": args.principle if with_principle else None,
        "beta": args.beta,
        "opad_window": args.opad_window,
        "rho": args.rho,
        "max_new_tokens": args.max_new_tokens,
        "stop": args.stop,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
    }


def _generate(args: argparse.Namespace, llm: AlignedLLM, console: Console) -> None:
    started = time.perf_counter()
    stream = llm.stream(_prompt(args), **_settings(args, args.method, True))
    for delta in stream:
        sys.stdout.write(delta)
        sys.stdout.flush()
    sys.stdout.write("\n")
    result = stream.result
    elapsed = time.perf_counter() - started
    console.print(
        f"[dim]{args.method}: {result.output_tokens} tokens in {elapsed:.1f} s "
        f"({result.output_tokens / elapsed:.1f} tok/s), finish_reason={result.finish_reason}[/dim]"
    )


def _compare(args: argparse.Namespace, llm: AlignedLLM, console: Console) -> None:
    columns = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = [name for name in columns if name not in COMPARE_COLUMNS]
    if unknown or not columns:
        raise SystemExit(f"--methods: unknown {unknown}; choose among {', '.join(COMPARE_COLUMNS)}")
    for name in columns:
        DecodeSettings(**_settings(args, *COMPARE_COLUMNS[name]))
    texts = {}
    progress = Progress(
        TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
        TimeElapsedColumn(), console=console, transient=True,
    )  # fmt: skip
    with progress:
        for name in columns:
            method, with_principle = COMPARE_COLUMNS[name]
            task = progress.add_task(name, total=args.max_new_tokens)
            stream = llm.stream(_prompt(args), **_settings(args, method, with_principle))
            for _ in stream:
                progress.update(task, completed=stream.generated_tokens)
            progress.update(task, completed=args.max_new_tokens)
            texts[name] = stream.result
    table = Table(title=f"Prompt: {args.prompt}\nPrinciple: {args.principle}", show_lines=True, expand=True)
    for name in columns:
        table.add_column(name, ratio=1)
    table.add_row(*(texts[name].text for name in columns))
    table.add_row(*(f"[dim]{texts[n].output_tokens} tokens, {texts[n].finish_reason}[/dim]" for n in columns))
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aligned-llm`` command."""
    args = _parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        llm = _load(args, console)
        if args.command == "generate":
            _generate(args, llm, console)
        else:
            _compare(args, llm, Console())
    except AlignedLLMError as error:
        console.print(f"[bold red]error:[/bold red] {error}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
