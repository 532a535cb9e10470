"""``aligned-llm sweep``: a grid over a method's parameters on a prompts file, written as JSONL and a plot."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aligned_llm.common_settings import COMMON_PARAMETERS
from aligned_llm.errors import InvalidSettingError
from aligned_llm.registry import method_parameters, registered_methods
from aligned_llm.spec import ModelSpec
from aligned_llm.sweeps.checkers import CHECKER_FACTORIES, Checker, checker_from_spec
from aligned_llm.sweeps.grid import grid_points
from aligned_llm.sweeps.runner import BASELINES, start_sweep
from aligned_llm.sweeps.scoring import PrincipleGain

if TYPE_CHECKING:
    from aligned_llm.llm import AlignedLLM


@dataclass(frozen=True)
class SweepArguments:
    """What the flags ask for, checked before the model loads."""

    grid: dict[str, list[Any]]
    adherence: Checker | PrincipleGain
    baselines: tuple[str, ...]
    settings: dict[str, Any]
    plot: Path


def add_sweep_command(commands: argparse._SubParsersAction, add_common_flags: Callable[..., None]) -> None:
    """The ``sweep`` subcommand: each method parameter's flag takes a comma-separated list of values."""
    sweep = commands.add_parser(
        "sweep", help="decode a prompts file at every point of a grid (e.g. --beta 0.25,0.5,1,2); JSONL and a plot",
        description="Decode every prompt at every combination of the listed values, all points sharing the running "
        "batch; score adherence (--check, or the principle-gain proxy) and fluency (perplexity under the plain "
        "model, repetition); write one JSON line per answer to --out and the adherence-vs-perplexity plot beside it.",
    )  # fmt: skip
    sweep.add_argument("prompts", help="a text file with one prompt per line, or JSONL with a 'prompt' field")
    sweep.add_argument("--out", required=True, help="the JSONL file to write (one record per point and prompt)")
    sweep.add_argument("--plot", help="the plot to write (default: --out with a .png suffix)")
    sweep.add_argument("--method", choices=list(registered_methods()), default="opad")
    sweep.add_argument(
        "--check", metavar="CHECKER[:ARG]",
        help=f"adherence checker: one of {', '.join(CHECKER_FACTORIES)} (e.g. max-words:40, starts-with:Yes, "
        "language:fr); default: the principle-gain proxy (how much likelier the principle makes the answer)",
    )  # fmt: skip
    sweep.add_argument(
        "--baselines", default="direct",
        help=f"comma-separated reference points among {', '.join(BASELINES)} ('' for none; default: direct)",
    )  # fmt: skip
    ModelSpec.add_arguments(sweep)
    add_common_flags(sweep)
    for name, declarations in method_parameters().items():
        methods = ", ".join(method for method, _ in declarations)
        sweep.add_argument("--" + name.replace("_", "-"), metavar="V1,V2,…",
                           help=f"values of {name} to try ({methods}), comma-separated")  # fmt: skip


def _values(name: str, text: str) -> list[Any]:
    """A flag's comma-separated values, each converted by a declaration of the parameter (ranges: the sweep)."""
    declarations = [parameter for _method, parameter in method_parameters()[name]]
    values = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise InvalidSettingError(name, f"--{name.replace('_', '-')} {text!r} has an empty value")
        errors = []
        for parameter in declarations:
            try:
                values.append(parameter.convert(item))
                break
            except InvalidSettingError as error:
                errors.append(error)
        else:
            raise errors[0]
    return values


def check_sweep_arguments(args: argparse.Namespace) -> SweepArguments:
    """The grid, scorer, baselines and shared settings from the flags; errors before the model loads."""
    grid = {name: _values(name, getattr(args, name)) for name in method_parameters() if getattr(args, name, None)}
    grid_points(args.method, grid)
    if args.check:
        try:
            adherence: Checker | PrincipleGain = checker_from_spec(args.check)
        except ValueError as error:
            raise InvalidSettingError("--check", str(error)) from None
    else:
        adherence = PrincipleGain()
    baselines = tuple(name.strip() for name in args.baselines.split(",") if name.strip())
    for name in baselines:
        if name not in BASELINES:
            raise InvalidSettingError("--baselines", f"must be among {', '.join(BASELINES)}, got {name!r}")
    settings = {
        parameter.name: getattr(args, parameter.name)
        for parameter in COMMON_PARAMETERS
        if getattr(args, parameter.name, None) is not None
    }
    plot = Path(args.plot) if args.plot else Path(args.out).with_suffix(".png")
    return SweepArguments(grid, adherence, baselines, settings, plot)


def run_sweep_command(
    args: argparse.Namespace, prompts: list[str], arguments: SweepArguments, llm: AlignedLLM, console: Console
) -> None:
    """Run the sweep with a progress bar, write the JSONL and the plot, print the points."""
    progress = Progress(
        TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("points"), TimeElapsedColumn(),
        console=console, transient=True,
    )  # fmt: skip
    with progress:
        task = progress.add_task("sweep", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        run = start_sweep(llm, prompts, arguments.grid, method=args.method, adherence=arguments.adherence,
                          baselines=arguments.baselines, on_progress=advance, **arguments.settings)  # fmt: skip
        result = run.result()
    count = result.write_jsonl(args.out)
    result.figure().savefig(arguments.plot, dpi=110)
    table = Table(title=f"{len(result.points)} points × {len(prompts)} prompts in {result.seconds:.1f} s "
                  f"(adherence: {result.adherence_name})")  # fmt: skip
    for column in ("point", "adherence", "perplexity", "repetition", "tokens", "front"):
        table.add_column(column, justify="left" if column == "point" else "right")
    for point in sorted(result.points, key=lambda p: -p.adherence if p.adherence == p.adherence else 0):
        table.add_row(point.label, f"{point.adherence:.3f}", f"{point.perplexity:.2f}", f"{point.repetition:.3f}",
                      f"{point.mean_tokens:.1f}", "★" if point.pareto else "")  # fmt: skip
    Console().print(table)
    console.print(f"{count} records written to {args.out}; plot: {arguments.plot}")
