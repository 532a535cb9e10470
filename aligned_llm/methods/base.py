"""The method interface: which context rows a method needs, and its pure per-step scoring rule."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch

from aligned_llm.parameters import Parameter
from aligned_llm.setup import POLICY, ModelSetup

State = dict[str, torch.Tensor]
"""Per-request method state; every tensor has the batch (request) dimension first."""

MAX_FP32_SCALE = 1e30
"""The largest factor a built-in method multiplies a log-ratio or a logit difference by: OPAD's 1/β,
PAD's β and linear alignment's ρ are bounded by it, so OPAD's β is at least 1e-30.

fp32 scores reach 3.4e38, so a factor of 1e30 keeps the scaled term finite for differences up to
3.4e8 (3.4e4 once divided by the smallest temperature, 1e-4), far beyond what a model's logits
span (tens to a few hundred). A factor past 3.4e38 is not an fp32 number at all (``1e39`` and
``1 / 1e-40`` become inf), so such a setting could only ever give infinite or NaN scores."""


@dataclass(frozen=True)
class RowSpec:
    """One context a method decodes in lockstep with the others.

    ``guided`` rows get the guidance (principle and/or user profile) rendered into their
    conversation; unguided rows get the same conversation without it. ``model`` names the
    loaded model that runs the row (``setup.POLICY``, ``REFERENCE``, ``REWARD``) and
    ``adapter`` the peft adapter active for it (``None``: the model as loaded;
    ``setup.ADAPTERS_OFF``: every adapter off).
    """

    name: str
    guided: bool
    model: str = POLICY
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
    r"""A decoding rule over the fp32 logits of its rows; it never calls a model.

    A method declares itself: its ``name``, its ``parameters`` (each setting it reads, with
    type, default, allowed values and help), the guidance it ``requires``, what its trace's
    ``signal`` means, and how it :meth:`build`\ s itself from the settings and the loaded
    models. ``aligned_llm.register_method`` then makes it usable by name on every surface.
    """

    name: ClassVar[str]
    parameters: ClassVar[tuple[Parameter, ...]] = ()
    """The settings this method reads, declared once for every surface."""
    requires: ClassVar[str | None] = None
    """The guidance setting (``"principle"`` or ``"profile"``) the method cannot work without."""
    signal_label: ClassVar[str] = "signal: how far the method moved the token"
    """What ``TokenTrace.signal`` means for this method (legends and plot labels)."""
    rows: tuple[RowSpec, ...]
    needs_prompt_logits: bool = False
    """When true, the engine passes the mean logits over each row's prompt positions."""

    @classmethod
    def build(cls, settings: Mapping[str, Any], setup: ModelSetup) -> DecodingMethod:
        """An instance configured by ``settings`` (one value per declared parameter) for the loaded models.

        The default passes each parameter as a keyword of the constructor. Override it to
        choose rows by what is loaded, raising ``InvalidSettingError("method", ...)`` when a
        model or adapter the method needs is missing.
        """
        return cls(**{parameter.name: settings[parameter.name] for parameter in cls.parameters})

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
