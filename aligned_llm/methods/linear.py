"""Linear Alignment / classifier-free-guidance baseline over the same two contexts as OPAD.

score = (1 + ρ)·z_c − ρ·z_u on raw logits, restricted to the top-p nucleus of softmax(z_c).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from aligned_llm.methods.base import MAX_FP32_SCALE, DecodingMethod, RowSpec, State, StepScores
from aligned_llm.parameters import Parameter
from aligned_llm.registry import register_method
from aligned_llm.sampling import nucleus_mask

RHO = Parameter(
    "rho", float, 2.0,
    "linear alignment's strength ρ: score = (1 + ρ)·z_c − ρ·z_u; at most 1e30, which keeps ρ·(z_c − z_u) "
    "finite in fp32",
    minimum=0.0, maximum=MAX_FP32_SCALE, ui_range=(0.0, 10.0),
)  # fmt: skip
"""ρ's upper bound is ``MAX_FP32_SCALE``: past about 3.4e38 ρ is not an fp32 number and ρ·(z_c − z_u) overflows."""
MASK_TOP_P = Parameter(
    "mask_top_p", float, 0.8, "linear alignment keeps only the top-p nucleus of the guided distribution",
    minimum=0.0, exclusive_minimum=True, maximum=1.0, ui_range=(0.05, 1.0),
)  # fmt: skip


@register_method
class LinearAlignment(DecodingMethod):
    """Extrapolate from the unconstrained towards the constrained logits by ``rho``."""

    name: ClassVar[str] = "linear"
    parameters: ClassVar[tuple[Parameter, ...]] = (RHO, MASK_TOP_P)
    requires: ClassVar[str | None] = "principle"
    signal_label: ClassVar[str] = "linear ρ·(z_c − z_u)"
    rows: tuple[RowSpec, ...] = (
        RowSpec("constrained", guided=True),
        RowSpec("unconstrained", guided=False),
    )

    def __init__(self, rho: float = 2.0, mask_top_p: float = 0.8) -> None:
        self.rho = RHO.validate(rho)
        self.mask_top_p = MASK_TOP_P.validate(mask_top_p)

    def score(self, logits: torch.Tensor, state: State, step: int) -> StepScores:
        constrained, unconstrained = logits[:, 0], logits[:, 1]
        signal = self.rho * (constrained - unconstrained)
        keep = nucleus_mask(torch.log_softmax(constrained, dim=-1), self.mask_top_p)
        scores = (constrained + signal).masked_fill(~keep, float("-inf"))
        return StepScores(scores, signal, state)

    def settings(self) -> dict[str, object]:
        return {"rho": self.rho, "mask_top_p": self.mask_top_p}
