"""What ends a request: a list of stopping criteria, in the spirit of transformers' ``StoppingCriteriaList``.

After each step's token is recorded (and its text assembled), the criteria are asked in order;
the first that answers gives the request's finish reason. A third party adds its own with
``AlignedLLM(..., stopping_criteria=[...])``; they are asked after the built-in ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence

from aligned_llm.engine.requests import Progress
from aligned_llm.result import FinishReason


class StoppingCriterion(ABC):
    """Decides, after a request's latest token (``progress.token_ids[-1]``), whether it ends and why."""

    @abstractmethod
    def __call__(self, progress: Progress) -> FinishReason | None:
        """``"stop"`` or ``"length"`` to end the request now; ``None`` to go on."""


class EndOfTurn(StoppingCriterion):
    """The model wrote one of its end-of-turn tokens (never part of the text)."""

    def __init__(self, stop_token_ids: Collection[int]) -> None:
        self.stop_token_ids = frozenset(stop_token_ids)

    def __call__(self, progress: Progress) -> FinishReason | None:
        return "stop" if progress.token_ids[-1] in self.stop_token_ids else None


class StopStrings(StoppingCriterion):
    """The text reached one of the request's stop strings (the assembler cut it there)."""

    def __call__(self, progress: Progress) -> FinishReason | None:
        return "stop" if progress.assembler.stopped_by is not None else None


class GrammarEnd(StoppingCriterion):
    """The answer's grammar is complete (a tool call block closed, a JSON answer ended)."""

    def __call__(self, progress: Progress) -> FinishReason | None:
        return "stop" if progress.constraint is not None and progress.constraint.finished else None


class LengthLimit(StoppingCriterion):
    """The request generated ``max_new_tokens`` tokens."""

    def __call__(self, progress: Progress) -> FinishReason | None:
        return "length" if len(progress.token_ids) >= progress.request.max_new_tokens else None


def stopping_list(
    stop_token_ids: Collection[int], extra: Sequence[StoppingCriterion] = ()
) -> tuple[StoppingCriterion, ...]:
    """The engine's criteria in order: end of turn, stop strings, grammar end, ``extra``, length."""
    return (EndOfTurn(stop_token_ids), StopStrings(), GrammarEnd(), *extra, LengthLimit())
