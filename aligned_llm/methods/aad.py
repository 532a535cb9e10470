"""AAD: alignment-aware decoding (arXiv 2509.26169), following the paper.

Among tokens the DPO model finds plausible (p ≥ α · max p), pick the one whose log-probability
the DPO model raised most over its SFT reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from aligned_llm.errors import InvalidSettingError
from aligned_llm.methods.base import DecodingMethod, RowSpec, State, StepScores
from aligned_llm.parameters import Parameter
from aligned_llm.registry import register_method
from aligned_llm.setup import ADAPTERS_OFF, DPO_ADAPTER, REFERENCE, ModelSetup

ALPHA = Parameter(
    "alpha", float, 0.1,
    "AAD's plausibility threshold α: candidates have p_DPO >= α·max p_DPO (1 = greedy DPO)",
    minimum=0.0, exclusive_minimum=True, maximum=1.0, ui_range=(0.01, 1.0),
)  # fmt: skip


def has_pair(setup: ModelSetup) -> bool:
    """Whether the loaded models form a DPO/SFT pair: a reference model, or a DPO adapter on the policy."""
    return setup.has(REFERENCE) or setup.has_adapter(DPO_ADAPTER)


@register_method
class AAD(DecodingMethod):
    """Pick the plausible token the DPO model raised most over its SFT reference.

    Rows ``dpo`` and ``sft``: one model with a LoRA adapter on/off (``pair="adapter"``, one
    forward), or two models (``pair="models"``, the SFT reference loaded as ``reference``).
    Greedy by definition (ties in the advantage go to the more likely DPO token); with a
    temperature, samples softmax(advantage / T) over the plausible set (a library extra).
    """

    name: ClassVar[str] = "aad"
    parameters: ClassVar[tuple[Parameter, ...]] = (ALPHA,)
    signal_label: ClassVar[str] = "AAD advantage log p_DPO − log p_SFT"

    def __init__(self, alpha: float = 0.1, pair: str = "adapter") -> None:
        self.alpha = ALPHA.validate(alpha)
        if pair == "adapter":
            self.rows = (
                RowSpec("dpo", guided=True, adapter=DPO_ADAPTER),
                RowSpec("sft", guided=True, adapter=ADAPTERS_OFF),
            )
        elif pair == "models":
            self.rows = (RowSpec("dpo", guided=True), RowSpec("sft", guided=True, model=REFERENCE))
        else:
            raise InvalidSettingError("pair", f"must be 'adapter' or 'models', got {pair!r}")
        self.pair = pair

    @classmethod
    def build(cls, settings: Mapping[str, Any], setup: ModelSetup) -> AAD:
        """AAD over the loaded pair: two models when a reference is loaded, else the DPO adapter on/off."""
        if not has_pair(setup):
            raise InvalidSettingError(
                "method",
                "'aad' needs a DPO/SFT pair: from_pretrained(dpo, reference=sft), "
                "from_pretrained(sft, adapter=dpo_lora) or AlignedLLM.default(adapter='bundled')",
            )
        return cls(alpha=settings["alpha"], pair="models" if setup.has(REFERENCE) else "adapter")

    def score(self, logits: torch.Tensor, state: State, step: int) -> StepScores:
        dpo = torch.log_softmax(logits[:, 0], dim=-1)
        sft = torch.log_softmax(logits[:, 1], dim=-1)
        plausible = dpo >= math.log(self.alpha) + dpo.max(dim=-1, keepdim=True).values
        advantage = dpo - sft
        scores = advantage.masked_fill(~plausible, float("-inf"))
        return StepScores(scores, advantage.masked_fill(~plausible, 0.0), state, tie_break=dpo)

    def settings(self) -> dict[str, object]:
        return {"alpha": self.alpha, "pair": self.pair}
