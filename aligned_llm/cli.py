"""The ``aligned-llm`` command: generate, compare, sweep settings, build preference pairs, or serve."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aligned_llm.common_settings import COMMON_PARAMETERS, DEFAULT_MAX_NEW_TOKENS
from aligned_llm.errors import AlignedLLMError, InvalidSettingError
from aligned_llm.llm import AlignedLLM
from aligned_llm.pairs import PreferencePair, aad_pairs, aad_settings, write_jsonl
from aligned_llm.parameters import Parameter
from aligned_llm.registry import method_parameters, registered_methods
from aligned_llm.settings import DecodeSettings
from aligned_llm.spec import ModelSpec
from aligned_llm.sweeps.command import add_sweep_command, check_sweep_arguments, run_sweep_command

SETTING_FLAGS_SKIPPED = frozenset(
    {"method", "trace", "tools", "tool_choice", "parallel_tool_calls", "response_format", "constrained",
     "constrained_alignment"}
)  # fmt: skip
"""Settings without a flag of their own: ``--method`` is per command, a trace is for notebooks, and tools
and response formats are structured values for code (Python, LangChain, LlamaIndex, the server)."""


def compare_columns() -> dict[str, tuple[str, bool]]:
    """compare's columns: name → (method, whether the principle/profile are given); every registered method."""
    columns = {"vanilla": ("vanilla", False), "direct": ("vanilla", True)}
    columns.update({name: (name, True) for name in registered_methods() if name != "vanilla"})
    return columns


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_with(*declarations: Parameter) -> Callable[[str], Any]:
    """argparse's ``type=``: text as the declared type (ranges are checked by the core, with one-line errors)."""

    def parse(text: str) -> Any:
        errors = []
        for parameter in declarations:
            try:
                return parameter.convert(text)
            except InvalidSettingError as error:
                errors.append(str(error).split(": ", 1)[1])
        raise argparse.ArgumentTypeError(errors[0])

    parse.__name__ = declarations[0].name
    return parse


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per common setting and per registered method parameter, help and checks from the registry."""
    add_common_flags(parser)
    _add_method_flags(parser)


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per common setting (guidance, length, sampling, stop), help and checks from the registry."""
    for parameter in COMMON_PARAMETERS:
        if parameter.name in SETTING_FLAGS_SKIPPED:
            continue
        if parameter.name == "stop":
            parser.add_argument("--stop", action="append", help="a stop string (repeatable)")
        elif parameter.check is not None:
            parser.add_argument(_flag(parameter.name), help=parameter.help)
        else:
            parser.add_argument(
                _flag(parameter.name), type=_parse_with(parameter), help=f"{parameter.help} ({parameter.allowed()})"
            )


def _add_method_flags(parser: argparse.ArgumentParser) -> None:
    for name, declarations in method_parameters().items():
        helps = "; ".join(
            f"{method}: {parameter.help} (default {parameter.default!r})" for method, parameter in declarations
        )
        parameters = [parameter for _method, parameter in declarations]
        parser.add_argument(_flag(name), type=_parse_with(*parameters), help=helps.replace("%", "%%"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aligned-llm", description="Decoding-time alignment of a local LM.")
    commands = parser.add_subparsers(dest="command", required=True)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("prompt", help="the user message")
    ModelSpec.add_arguments(shared)
    shared.add_argument("--system", help="a system message to put before the prompt")
    _add_setting_flags(shared)

    generate = commands.add_parser("generate", parents=[shared], help="decode with one method, streaming the text")
    generate.add_argument("--method", choices=list(registered_methods()), default="vanilla")

    compare = commands.add_parser("compare", parents=[shared], help="decode with several methods, side by side")
    compare.add_argument(
        "--methods",
        default="vanilla,direct,opad",
        help=f"comma-separated columns among {', '.join(compare_columns())} (default: vanilla,direct,opad); "
        "vanilla has no principle, direct is vanilla with the principle in context",
    )

    pairs = commands.add_parser(
        "pairs", help="AAD as a data generator: JSONL preference pairs (chosen = AAD, rejected = DPO sample)"
    )
    pairs.add_argument("prompts", help="a text file with one prompt per line, or JSONL with a 'prompt' field")
    pairs.add_argument("--out", required=True, help="the JSONL file to write")
    ModelSpec.add_arguments(pairs, leave_out=("reward_model",))  # AAD's pair: --model with --adapter or --reference
    pairs.add_argument("--alpha", type=float, default=0.1)
    pairs.add_argument("--temperature", type=float, default=1.0, help="of the rejected nucleus sample")
    pairs.add_argument("--top-p", type=float, default=0.9, help="of the rejected nucleus sample")
    pairs.add_argument("--seed", type=int, default=0)
    pairs.add_argument("--max-new-tokens", type=int, default=256)
    pairs.add_argument("--batch-size", type=int, default=8)
    pairs.add_argument("--ray", action="store_true", help="decode on Ray Data (one model per replica)")
    pairs.add_argument("--replicas", type=int, default=1, help="with --ray: how many model replicas decode at once")
    pairs.add_argument("--ray-address", help="with --ray: a running cluster ('auto', ray://…); default: a local Ray")
    _add_serve_command(commands)
    add_sweep_command(commands, add_common_flags)
    return parser


def _add_serve_command(commands: argparse._SubParsersAction) -> None:
    """``aligned-llm serve``: the OpenAI-compatible server (the ``serve`` extra; ``--ray`` needs the ``ray`` extra)."""
    serve = commands.add_parser("serve", help="an OpenAI-compatible HTTP server on the model (docs/serving.md)")
    ModelSpec.add_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port, 0 to 65535 (0: any free port)")
    serve.add_argument(
        "--api-key",
        help="require 'Authorization: Bearer KEY' on /v1; a non-empty key (default: $ALIGNED_LLM_API_KEY; "
        "no authentication when neither is set)",
    )
    serve.add_argument("--served-model-name", help="the name clients send as 'model' (default: the model's)")
    serve.add_argument("--max-queue", type=int, default=64, help="requests in flight beyond which new ones get 503")
    serve.add_argument("--retry-after", type=int, default=1, help="seconds (>= 0) a 503 tells the client to wait")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--ray", action="store_true", help="run as Ray Serve replicas behind Ray's HTTP proxy")
    serve.add_argument("--replicas", type=int, help="with --ray: how many replicas (one model each; default 1)")
    serve.add_argument("--num-cpus", type=float, help="with --ray: CPUs reserved per replica")
    serve.add_argument("--num-gpus", type=float, help="with --ray: GPUs per replica (e.g. 1: one model per GPU)")
    serve.add_argument("--ray-address", help="with --ray: a running cluster ('auto', ray://…); default: a local Ray")


RAY_ONLY_FLAGS = ("replicas", "num_cpus", "num_gpus", "ray_address")
"""``serve`` flags that mean something only with ``--ray``; given without it they are an error, not ignored."""


def _serve_options(args: argparse.Namespace) -> dict[str, Any]:
    """``serve``'s server options, all checked before any model loads; an error names the flag (or variable)."""
    from aligned_llm.server.options import PORT, check_app_options, check_ray_options

    from_environment = args.api_key is None and "ALIGNED_LLM_API_KEY" in os.environ
    api_key = os.environ["ALIGNED_LLM_API_KEY"] if from_environment else args.api_key
    options = {"api_key": api_key, "max_queue": args.max_queue, "retry_after": args.retry_after}
    if args.served_model_name is not None:
        options["served_model_name"] = args.served_model_name
    names = {"api_key": "$ALIGNED_LLM_API_KEY" if from_environment else "--api-key"}
    try:
        PORT.validate(args.port)
        check_ray_options(replicas=1 if args.replicas is None else args.replicas, num_cpus=args.num_cpus,
                          num_gpus=args.num_gpus)  # fmt: skip
        check_app_options(**options)
    except InvalidSettingError as error:
        flag = names.get(error.parameter, _flag(error.parameter))
        raise InvalidSettingError(flag, str(error).split(": ", 1)[1]) from None
    given = [name for name in RAY_ONLY_FLAGS if getattr(args, name) is not None]
    if given and not args.ray:
        raise InvalidSettingError(
            _flag(given[0]), "applies only with --ray (Ray Serve replicas); add --ray or leave it out"
        )
    return options


def _serve(args: argparse.Namespace) -> None:
    options = _serve_options(args)
    from aligned_llm.server.run import run_http, run_ray

    spec = ModelSpec.from_arguments(args)
    if args.ray:
        run_ray(spec, host=args.host, port=args.port, replicas=args.replicas or 1, address=args.ray_address,
                num_cpus=args.num_cpus, num_gpus=args.num_gpus, **options)  # fmt: skip
    else:
        run_http(spec, host=args.host, port=args.port, log_level=args.log_level, **options)


def _load(args: argparse.Namespace, console: Console) -> AlignedLLM:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    spec = ModelSpec.from_arguments(args)
    with console.status(f"Loading {spec.display_name}…"):
        return spec.load()


def _read_prompts(path: str) -> list[str]:
    """One prompt per line, or JSONL rows with a ``prompt`` (or ``instruction``) field."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidSettingError("prompts", f"cannot read {path!r}: {_reason(error)}") from error
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise InvalidSettingError("prompts", f"{path!r} has no prompts (one per line, or JSONL with 'prompt')")
    if not all(line.lstrip().startswith("{") for _, line in lines):
        return [line for _, line in lines]
    prompts = []
    for number, line in lines:
        try:
            row = json.loads(line)
        except ValueError as error:
            raise InvalidSettingError("prompts", f"{path!r} line {number} is not valid JSON: {error}") from error
        prompt = row.get("prompt", row.get("instruction")) if isinstance(row, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidSettingError(
                "prompts", f"{path!r} line {number} needs a non-empty 'prompt' (or 'instruction') string"
            )
        prompts.append(prompt)
    return prompts


def _check_output(path: str) -> None:
    """Fail before any decoding when ``--out`` cannot be written: a missing folder, a folder, no permission."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise InvalidSettingError("--out", f"{path!r} is a folder; name a file to write")
    folder = out.parent
    if not folder.is_dir():
        raise InvalidSettingError("--out", f"the folder {str(folder)!r} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{out.name}.", suffix=".check"):
            pass
    except OSError as error:
        raise InvalidSettingError("--out", f"cannot write in {str(folder)!r}: {_reason(error)}") from error


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error)


def _pairs(args: argparse.Namespace, prompts: list[str], llm: AlignedLLM, console: Console) -> None:
    pairs = aad_pairs(
        llm, prompts, alpha=args.alpha, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
    )  # fmt: skip
    count = write_jsonl(pairs, args.out)
    console.print(f"{count} pairs from {len(prompts)} prompts written to {args.out}")


def _pairs_on_ray(args: argparse.Namespace, prompts: list[str], console: Console) -> None:
    """``pairs --ray``: the same pairs and JSONL, decoded by ``--replicas`` models on Ray Data."""
    import ray

    from aligned_llm.ray_data import pair_dataset

    chosen, rejected = aad_settings(alpha=args.alpha, temperature=args.temperature, top_p=args.top_p,
                                    seed=args.seed, max_new_tokens=args.max_new_tokens)  # fmt: skip
    spec = ModelSpec.from_arguments(args)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=args.ray_address, include_dashboard=False)
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        dataset = pair_dataset(ray.data.from_items([{"prompt": prompt} for prompt in prompts]), spec, chosen=chosen,
                               rejected=rejected, replicas=args.replicas, batch_size=args.batch_size)  # fmt: skip
        rows = dataset.iter_rows()
        count = write_jsonl((PreferencePair(row["prompt"], row["chosen"], row["rejected"]) for row in rows), args.out)
    finally:
        if started_here:
            ray.shutdown()
    console.print(f"{count} pairs from {len(prompts)} prompts written to {args.out} ({args.replicas} Ray replicas)")


def _prompt(args: argparse.Namespace) -> str | list[dict[str, str]]:
    if args.system is None:
        return args.prompt
    return [{"role": "system", "content": args.system}, {"role": "user", "content": args.prompt}]


def _settings(args: argparse.Namespace, method: str, guided: bool) -> dict[str, object]:
    """The core's settings from the flags that were given (the rest keep the method's defaults)."""
    settings: dict[str, object] = {"method": method}
    for name in (*(parameter.name for parameter in COMMON_PARAMETERS), *method_parameters()):
        if name in SETTING_FLAGS_SKIPPED or getattr(args, name, None) is None:
            continue
        if name in ("principle", "profile") and not guided:
            continue
        settings[name] = getattr(args, name)
    return settings


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
    available = compare_columns()
    columns = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = [name for name in columns if name not in available]
    if unknown or not columns:
        raise SystemExit(f"--methods: unknown {unknown}; choose among {', '.join(available)}")
    for name in columns:
        llm.method_for(DecodeSettings(**_settings(args, *available[name])))
    texts = {}
    progress = Progress(
        TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
        TimeElapsedColumn(), console=console, transient=True,
    )  # fmt: skip
    with progress:
        for name in columns:
            method, with_principle = available[name]
            total = args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
            task = progress.add_task(name, total=total)
            stream = llm.stream(_prompt(args), **_settings(args, method, with_principle))
            for _ in stream:
                progress.update(task, completed=stream.generated_tokens)
            progress.update(task, completed=total)
            texts[name] = stream.result
    guidance = "".join(
        f"\n{label}: {value}" for label, value in (("Principle", args.principle), ("Profile", args.profile)) if value
    )
    table = Table(title=f"Prompt: {args.prompt}{guidance}", show_lines=True, expand=True)
    for name in columns:
        table.add_column(name, ratio=1)
    table.add_row(*(texts[name].text for name in columns))
    table.add_row(*(f"[dim]{texts[n].output_tokens} tokens, {texts[n].finish_reason}[/dim]" for n in columns))
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aligned-llm`` command.

    Every failure ends with a one-line message on stderr and a non-zero exit code: 2 for bad
    input (settings, files, models), 1 for anything else, 130 when interrupted. With
    ``ALIGNED_LLM_DEBUG=1`` unexpected errors show their traceback instead.
    """
    args = _parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        if args.command == "serve":
            _serve(args)
            return 0
        if args.command == "sweep":
            prompts = _read_prompts(args.prompts)
            _check_output(args.out)
            sweep_arguments = check_sweep_arguments(args)
            run_sweep_command(args, prompts, sweep_arguments, _load(args, console), console)
            return 0
        if args.command == "pairs":
            prompts = _read_prompts(args.prompts)
            _check_output(args.out)
            if args.ray:
                _pairs_on_ray(args, prompts, console)
                return 0
        llm = _load(args, console)
        if args.command == "generate":
            _generate(args, llm, console)
        elif args.command == "pairs":
            _pairs(args, prompts, llm, console)
        else:
            _compare(args, llm, Console())
    except AlignedLLMError as error:
        _fail(console, str(error))
        return 2
    except KeyboardInterrupt:
        _fail(console, "interrupted")
        return 130
    except Exception as error:
        if os.environ.get("ALIGNED_LLM_DEBUG"):
            raise
        _fail(console, f"{type(error).__name__}: {error} (ALIGNED_LLM_DEBUG=1 shows the traceback)")
        return 1
    return 0


def _fail(console: Console, message: str) -> None:
    """One line on stderr, whatever the message holds (newlines, markup-like brackets)."""
    console.print(f"[bold red]error:[/bold red] {escape(' '.join(message.split()))}", soft_wrap=True)


if __name__ == "__main__":
    sys.exit(main())
