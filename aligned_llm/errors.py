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


class ModelLoadError(ModelPathError):
    """A file of a model, adapter or value head exists but cannot be used; names the file and the fault.

    A subclass of :class:`ModelPathError`, so code catching that keeps working. ``path`` is the
    file (or folder) at fault and ``problem`` says what is wrong with it.
    """

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (self.path, self.problem)


class NonFiniteLogitsError(AlignedLLMError, ValueError):
    """The model produced NaN or infinite logits; decoding stopped instead of guessing."""


class MissingPackageError(AlignedLLMError, ImportError):
    """An optional package needed for this call is not installed."""
