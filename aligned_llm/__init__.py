"""aligned-llm: align a local Hugging Face language model at decoding time."""

from __future__ import annotations

from aligned_llm.errors import (
    AlignedLLMError,
    InvalidSettingError,
    MissingPackageError,
    ModelPathError,
    NonFiniteLogitsError,
    PromptTooLongError,
)
from aligned_llm.llm import AlignedLLM, GenerationStream
from aligned_llm.methods import OPAD, DecodingMethod, LinearAlignment, RowSpec, StepScores, Vanilla
from aligned_llm.result import GenerationResult, TokenTrace
from aligned_llm.settings import DecodeSettings

__version__ = "0.1.0"

__all__ = [
    "OPAD",
    "AlignedLLM",
    "AlignedLLMError",
    "DecodeSettings",
    "DecodingMethod",
    "GenerationResult",
    "GenerationStream",
    "InvalidSettingError",
    "LinearAlignment",
    "MissingPackageError",
    "ModelPathError",
    "NonFiniteLogitsError",
    "PromptTooLongError",
    "RowSpec",
    "StepScores",
    "TokenTrace",
    "Vanilla",
]
