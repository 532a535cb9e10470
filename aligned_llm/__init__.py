"""aligned-llm: align a local Hugging Face language model at decoding time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aligned_llm.engine import Progress, ScoreProcessor, StepContext, StoppingCriterion
from aligned_llm.errors import (
    AlignedLLMError,
    InvalidSettingError,
    MissingPackageError,
    ModelLoadError,
    ModelPathError,
    NonFiniteLogitsError,
    PromptTooLongError,
)
from aligned_llm.generation import Generation, GenerationStream
from aligned_llm.llm import AlignedLLM
from aligned_llm.methods import AAD, OPAD, PAD, DecodingMethod, LinearAlignment, RowSpec, StepScores, Vanilla
from aligned_llm.parameters import Parameter
from aligned_llm.registry import method_class, register_method, registered_methods, registered_temporarily
from aligned_llm.result import GenerationResult, StreamDelta, TokenTrace, ToolCall, ToolCallDelta
from aligned_llm.settings import DecodeSettings, check_setting, setting_names
from aligned_llm.setup import ModelSetup
from aligned_llm.spec import ModelSpec
from aligned_llm.sweeps import PrincipleGain, SweepResult, SweepRun, SweepScoringError, start_sweep, sweep

if TYPE_CHECKING:
    from aligned_llm.server import create_app
    from aligned_llm.token_view import signal_figure, token_html
    from aligned_llm.widgets import TuningPanel

__version__ = "0.1.0"

_LAZY = {
    "TuningPanel": "aligned_llm.widgets",
    "create_app": "aligned_llm.server",
    "signal_figure": "aligned_llm.token_view",
    "token_html": "aligned_llm.token_view",
}
"""Notebook helpers and the server, imported on first access: ``import aligned_llm`` needs neither extra."""

__all__ = [
    "AAD",
    "OPAD",
    "PAD",
    "AlignedLLM",
    "AlignedLLMError",
    "DecodeSettings",
    "DecodingMethod",
    "Generation",
    "GenerationResult",
    "GenerationStream",
    "InvalidSettingError",
    "LinearAlignment",
    "MissingPackageError",
    "ModelLoadError",
    "ModelPathError",
    "ModelSetup",
    "ModelSpec",
    "NonFiniteLogitsError",
    "Parameter",
    "PrincipleGain",
    "Progress",
    "PromptTooLongError",
    "RowSpec",
    "ScoreProcessor",
    "StepContext",
    "StepScores",
    "StoppingCriterion",
    "StreamDelta",
    "SweepResult",
    "SweepRun",
    "SweepScoringError",
    "TokenTrace",
    "ToolCall",
    "ToolCallDelta",
    "TuningPanel",
    "Vanilla",
    "check_setting",
    "create_app",
    "method_class",
    "register_method",
    "registered_methods",
    "registered_temporarily",
    "setting_names",
    "signal_figure",
    "start_sweep",
    "sweep",
    "token_html",
]


def __getattr__(name: str) -> Any:
    """Import the notebook helpers (panel, token view) and the server only when they are asked for."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aligned_llm' has no attribute {name!r}")
