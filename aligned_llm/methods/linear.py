"""Linear Alignment / classifier-free-guidance baseline over the same two contexts as OPAD.

score = (1 + ρ)·z_c − ρ·z_u on raw logits, restricted to the top-p nucleus of softmax(z_c).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from aligned_llm.errors import InvalidSettingError
from aligned_llm.methods.base import DecodingMethod, RowSpec, State, StepScores
from aligned_llm.sampling import nucleus_mask


class LinearAlignment(DecodingMethod):
    """Extrapolate from the unconstrained towards the constrained logits by ``rho``."""

    name: ClassVar[str] = "linear"
    requires: ClassVar[str | None] = "principle"
    rows: tuple[RowSpec, ...] = (
        RowSpec("constrained", guided=True),
        RowSpec("unconstrained", guided=False),
    )

    def __init__(self, rho: float = 2.0, mask_top_p: float = 0.8) -> None:
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not (0 <= rho < float("inf")):
            raise InvalidSettingError("rho", f"must be a finite number >= 0, got {rho!r}")
        if isinstance(mask_top_p, bool) or not isinstance(mask_top_p, (int, float)) or not (0 < mask_top_p <= 1):
            raise InvalidSettingError("mask_top_p", f"must be in (0, 1], got {mask_top_p!r}")
        self.rho = float(rho)
        self.mask_top_p = float(mask_top_p)

    def score(self, logits: torch.Tensor, state: State, step: int) -> StepScores:
        constrained, unconstrained = logits[:, 0], logits[:, 1]
        signal = self.rho * (constrained - unconstrained)
        keep = nucleus_mask(torch.log_softmax(constrained, dim=-1), self.mask_top_p)
        scores = (constrained + signal).masked_fill(~keep, float("-inf"))
        return StepScores(scores, signal, state)

    def settings(self) -> dict[str, object]:
        return {"rho": self.rho, "mask_top_p": self.mask_top_p}
