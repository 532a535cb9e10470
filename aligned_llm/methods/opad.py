"""OPAD: on-the-fly principle-guided decoding (arXiv 2502.14204), as in the authors' loop.

score_t(v) = ls(z_c)(v) + (1/β)·(r_t(v) + r_{t-1}(v)),  r = ls(z_c) − ls(z_u),
with plain argmax of ls(z_c) at the first step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch

from aligned_llm.methods.base import MAX_FP32_SCALE, DecodingMethod, RowSpec, State, StepScores
from aligned_llm.parameters import Parameter
from aligned_llm.registry import register_method
from aligned_llm.setup import ModelSetup

OpadWindow = Literal["reference", "last", 1]
OPAD_WINDOWS: tuple[OpadWindow, ...] = ("reference", "last", 1)

BETA = Parameter(
    "beta", float, 1.0,
    "OPAD's strength: the reward is scaled by 1/β (larger β = weaker guidance); β >= 1e-30 keeps 1/β·reward "
    "finite in fp32",
    minimum=1 / MAX_FP32_SCALE, ui_range=(0.05, 5.0),
)  # fmt: skip
"""β's lower bound 1e-30 keeps the factor 1/β at most ``MAX_FP32_SCALE``: below about 3e-39, 1/β is not an
fp32 number and every step's reward overflows."""
WINDOW = Parameter(
    "opad_window", str, "reference",
    "OPAD's reward window: 'reference' (the authors' loop), 'last' (last prompt position) or 1 (this step only)",
    choices=OPAD_WINDOWS,
)  # fmt: skip


@register_method
class OPAD(DecodingMethod):
    """Principle-guided decoding; rows: the conversation with and without the principle.

    ``window="reference"`` (default) reproduces the authors' loop, whose "previous step" at
    the first guided token is the mean of the prompt logits; ``"last"`` uses the last prompt
    position instead; ``1`` uses only the current step's log-ratio.
    """

    name: ClassVar[str] = "opad"
    parameters: ClassVar[tuple[Parameter, ...]] = (BETA, WINDOW)
    requires: ClassVar[str | None] = "principle"
    signal_label: ClassVar[str] = "OPAD reward (1/β)(r_t + r_{t−1}), r = log p(·|principle) − log p(·)"
    rows: tuple[RowSpec, ...] = (
        RowSpec("constrained", guided=True),
        RowSpec("unconstrained", guided=False),
    )

    def __init__(self, beta: float = 1.0, window: OpadWindow = "reference") -> None:
        self.beta = BETA.validate(beta)
        self.window = WINDOW.validate(window)
        self.needs_prompt_logits = window == "reference"

    @classmethod
    def build(cls, settings: Mapping[str, Any], setup: ModelSetup) -> OPAD:
        """OPAD with ``beta`` and ``opad_window``; it needs only the policy model."""
        return cls(beta=settings["beta"], window=settings["opad_window"])

    def initial_state(self, prompt_logits: torch.Tensor | None) -> State:
        if self.window != "reference":
            return {}
        assert prompt_logits is not None
        prompt_logprobs = torch.log_softmax(prompt_logits, dim=-1)
        return {"previous_ratio": prompt_logprobs[:, 0] - prompt_logprobs[:, 1]}

    def score(self, logits: torch.Tensor, state: State, step: int) -> StepScores:
        logprobs = torch.log_softmax(logits, dim=-1)
        constrained = logprobs[:, 0]
        ratio = constrained - logprobs[:, 1]
        if step == 0:
            signal = torch.zeros_like(constrained)
            previous = state.get("previous_ratio", ratio)
        elif self.window == 1:
            signal = ratio / self.beta
            previous = ratio
        else:
            signal = (ratio + state["previous_ratio"]) / self.beta
            previous = ratio
        new_state = {} if self.window == 1 else {"previous_ratio": previous}
        return StepScores(constrained + signal, signal, new_state)

    def settings(self) -> dict[str, object]:
        return {"beta": self.beta, "opad_window": self.window}
