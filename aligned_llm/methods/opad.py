"""OPAD: on-the-fly principle-guided decoding (arXiv 2502.14204), as in the authors' loop.

score_t(v) = ls(z_c)(v) + (1/β)·(r_t(v) + r_{t-1}(v)),  r = ls(z_c) − ls(z_u),
with plain argmax of ls(z_c) at the first step.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from aligned_llm.errors import InvalidSettingError
from aligned_llm.methods.base import DecodingMethod, RowSpec, State, StepScores

OpadWindow = Literal["reference", "last", 1]
OPAD_WINDOWS: tuple[OpadWindow, ...] = ("reference", "last", 1)


def validate_beta(beta: float) -> float:
    """β must be a finite number > 0 (larger β = weaker guidance)."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise InvalidSettingError("beta", f"must be a number > 0, got {beta!r}")
    if not (beta > 0 and beta != float("inf")):
        raise InvalidSettingError("beta", f"must be a finite number > 0, got {beta!r}")
    return float(beta)


class OPAD(DecodingMethod):
    """Principle-guided decoding; rows: the conversation with and without the principle.

    ``window="reference"`` (default) reproduces the authors' loop, whose "previous step" at
    the first guided token is the mean of the prompt logits; ``"last"`` uses the last prompt
    position instead; ``1`` uses only the current step's log-ratio.
    """

    name: ClassVar[str] = "opad"
    requires: ClassVar[str | None] = "principle"
    rows: tuple[RowSpec, ...] = (
        RowSpec("constrained", guided=True),
        RowSpec("unconstrained", guided=False),
    )

    def __init__(self, beta: float = 1.0, window: OpadWindow = "reference") -> None:
        self.beta = validate_beta(beta)
        if window not in OPAD_WINDOWS or isinstance(window, bool):
            raise InvalidSettingError("opad_window", f"must be one of {OPAD_WINDOWS}, got {window!r}")
        self.window = window
        self.needs_prompt_logits = window == "reference"

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
