"""Exceptions raised by aligned-llm; every one names what was wrong and what is allowed."""

from __future__ import annotations


class AlignedLLMError(Exception):
    """Base class of every error this library raises on purpose."""


class InvalidSettingError(AlignedLLMError, ValueError):
    """A decoding setting or argument is outside its allowed range."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


class PromptTooLongError(InvalidSettingError):
    """The rendered prompt (plus the tokens to generate) does not fit the context window."""


class ModelPathError(AlignedLLMError, ValueError):
    """A model path or name cannot be loaded."""


class NonFiniteLogitsError(AlignedLLMError, ValueError):
    """The model produced NaN or infinite logits; decoding stopped instead of guessing."""


class MissingPackageError(AlignedLLMError, ImportError):
    """An optional package needed for this call is not installed."""
