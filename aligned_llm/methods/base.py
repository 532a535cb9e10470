"""The method interface: which context rows a method needs, and its pure per-step scoring rule."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch

State = dict[str, torch.Tensor]
"""Per-request method state; every tensor has the batch (request) dimension first."""


@dataclass(frozen=True)
class RowSpec:
    """One context a method decodes in lockstep with the others.

    ``guided`` rows get the guidance (principle and/or user profile) rendered into their
    conversation; unguided rows get the same conversation without it. ``model`` names the
    loaded model that runs the row (``"policy"``, ``"reference"``, ``"reward"``) and
    ``adapter`` the peft adapter active for it (``None``: the model as loaded;
    ``"__base__"``: every adapter off).
    """

    name: str
    guided: bool
    model: str = "policy"
    adapter: str | None = None


class StepScores(NamedTuple):
    """A method's output for one step, all ``[B, V]`` fp32 except ``state``."""

    scores: torch.Tensor
    """Final score per token; the engine takes its argmax (greedy) or samples softmax(score/T)."""
    signal: torch.Tensor
    """How far the method moved each token relative to the first row's log-probabilities."""
    state: State
    tie_break: torch.Tensor | None = None
    """Greedy decoding picks, among tokens whose score ties for the maximum, the one with the
    highest ``tie_break`` (default: the lowest token id, as ``argmax`` does)."""


class DecodingMethod(ABC):
    """A decoding rule over the fp32 logits of its rows; it never calls a model."""

    name: ClassVar[str]
    rows: tuple[RowSpec, ...]
    requires: ClassVar[str | None] = None
    """The guidance setting (``"principle"`` or ``"profile"``) the method cannot work without."""
    needs_prompt_logits: bool = False
    """When true, the engine passes the mean logits over each row's prompt positions."""

    def initial_state(self, prompt_logits: torch.Tensor | None) -> State:
        """State before the first new token; ``prompt_logits`` is ``[B, R, V]`` when requested."""
        return {}

    @abstractmethod
    def score(self, logits: torch.Tensor, state: State, step: int) -> StepScores:
        """Score the next token from ``logits`` (``[B, R, V]`` fp32, rows in ``self.rows`` order)."""

    def settings(self) -> dict[str, object]:
        """The method's own parameters, for metadata and cache keys."""
        return {}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({params})"
