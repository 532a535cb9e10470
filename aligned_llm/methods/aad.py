"""AAD: alignment-aware decoding (arXiv 2509.26169), following the paper.

Among tokens the DPO model finds plausible (p ≥ α · max p), pick the one whose log-probability
the DPO model raised most over its SFT reference.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from aligned_llm.errors import InvalidSettingError
from aligned_llm.methods.base import DecodingMethod, RowSpec, State, StepScores

DPO_ADAPTER = "default"
"""peft's name for the first adapter loaded: the DPO side of an adapter pair."""


def validate_alpha(alpha: float) -> float:
    """α must be in (0, 1]; 1 reduces AAD to greedy decoding of the DPO model."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise InvalidSettingError("alpha", f"must be in (0, 1], got {alpha!r}")
    return float(alpha)


class AAD(DecodingMethod):
    """Pick the plausible token the DPO model raised most over its SFT reference.

    Rows ``dpo`` and ``sft``: one model with a LoRA adapter on/off (``pair="adapter"``, one
    forward), or two models (``pair="models"``, the SFT reference loaded as ``reference``).
    Greedy by definition (ties in the advantage go to the more likely DPO token); with a
    temperature, samples softmax(advantage / T) over the plausible set (a library extra).
    """

    name: ClassVar[str] = "aad"

    def __init__(self, alpha: float = 0.1, pair: str = "adapter") -> None:
        self.alpha = validate_alpha(alpha)
        if pair == "adapter":
            self.rows = (
                RowSpec("dpo", guided=True, adapter=DPO_ADAPTER),
                RowSpec("sft", guided=True, adapter="__base__"),
            )
        elif pair == "models":
            self.rows = (RowSpec("dpo", guided=True), RowSpec("sft", guided=True, model="reference"))
        else:
            raise InvalidSettingError("pair", f"must be 'adapter' or 'models', got {pair!r}")
        self.pair = pair

    def score(self, logits: torch.Tensor, state: State, step: int) -> StepScores:
        dpo = torch.log_softmax(logits[:, 0], dim=-1)
        sft = torch.log_softmax(logits[:, 1], dim=-1)
        plausible = dpo >= math.log(self.alpha) + dpo.max(dim=-1, keepdim=True).values
        advantage = dpo - sft
        scores = advantage.masked_fill(~plausible, float("-inf"))
        return StepScores(scores, advantage.masked_fill(~plausible, 0.0), state, tie_break=dpo)

    def settings(self) -> dict[str, object]:
        return {"alpha": self.alpha, "pair": self.pair}
