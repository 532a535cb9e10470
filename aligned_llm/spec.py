"""``ModelSpec``: what to load, declared once: as plain picklable data, as command-line flags and as keywords.

A server replica or a Ray actor cannot receive a loaded model; it receives a spec and loads
its own copy. The spec is fixed by whoever starts the workers (the command line, a Python
caller), never by a request. The same declaration gives the commands their load flags
(:meth:`ModelSpec.add_arguments`), the LangChain integration its model fields and cache keys,
and ``from_pretrained``'s keywords (:meth:`ModelSpec.load_options`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aligned_llm.llm import AlignedLLM

DTYPES = ("float32", "bfloat16", "float16")
CONTEXT_WINDOW_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
"""Config fields that give a model's context window, in the order ``AlignedLLM.context_window`` reads them."""


def _option(help_text: str, **argument: Any) -> Any:
    return field(default=None, metadata={"help": help_text, "argument": argument})


@dataclass(frozen=True)
class ModelSpec:
    """The arguments of :meth:`AlignedLLM.from_pretrained` (or :meth:`AlignedLLM.default` when ``model`` is None).

    ``adapter="bundled"`` with the default model adds the shipped DPO adapter.
    """

    model: str | None = _option("local folder or hub id (default: the bundled SmolLM2-135M-Instruct)")
    adapter: str | None = _option(
        "a LoRA adapter folder on the model (AAD's DPO side; 'bundled' with the default model)"
    )
    reference: str | None = _option("the SFT reference model of a DPO model, for AAD with two models")
    reward_model: str | None = _option(
        "PAD's reward model (PersRM): a model folder or hub id, or a LoRA adapter folder on the model"
    )
    device: str | None = _option("cpu, cuda, cuda:1, … (default: CUDA when available, else CPU)")
    dtype: str | None = _option("default: bf16 on CUDA, fp32 on CPU", choices=DTYPES)

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """The names besides ``model``: the keywords of ``from_pretrained`` a spec may set."""
        return tuple(option.name for option in fields(cls) if option.name != "model")

    @classmethod
    def help(cls, name: str) -> str:
        """What one field means, in words (the flag's help, the integrations' field descriptions)."""
        return next(option.metadata["help"] for option in fields(cls) if option.name == name)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, *, leave_out: tuple[str, ...] = ()) -> None:
        """One flag per field (``--model``, ``--adapter``, ``--reward-model``, …), except those in ``leave_out``."""
        for option in fields(cls):
            if option.name not in leave_out:
                flag = "--" + option.name.replace("_", "-")
                parser.add_argument(flag, help=option.metadata["help"], **option.metadata["argument"])

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> ModelSpec:
        """The spec the parsed flags name (flags a command leaves out stay ``None``)."""
        return cls(**{option.name: getattr(args, option.name, None) for option in fields(cls)})

    def load_options(self) -> dict[str, str]:
        """The keywords of ``from_pretrained``/``default`` this spec sets (``None`` ones left to their defaults)."""
        return {name: getattr(self, name) for name in self.options() if getattr(self, name) is not None}

    def load(self) -> AlignedLLM:
        """Load the model this spec names."""
        from aligned_llm.llm import AlignedLLM

        if self.model is None:
            return AlignedLLM.default(**self.load_options())
        return AlignedLLM.from_pretrained(self.model, **self.load_options())

    def declared_context_window(self) -> int | None:
        """The context window the model folder's ``config.json`` declares, read without loading any weights.

        ``None`` when it cannot be known before loading (a hub id, a GGUF file, no such field).
        For an integration that describes the model before its first call (LangChain's
        ``profile``); a loaded model's ``AlignedLLM.context_window`` is the one decoding uses.
        """
        from aligned_llm.loading import bundled_model_dir

        folder = bundled_model_dir() if self.model is None else Path(self.model).expanduser()
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        for name in CONTEXT_WINDOW_FIELDS:
            value = config.get(name) if isinstance(config, dict) else None
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    @property
    def display_name(self) -> str:
        """The model's name as users see it (the bundled model's name when none is given)."""
        from aligned_llm.loading import BUNDLED_NAME

        return self.model or BUNDLED_NAME
