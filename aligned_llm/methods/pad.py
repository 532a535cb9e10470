"""PAD: personalised alignment at decoding time (arXiv 2410.04070), as in the authors' inference.

K = top-k of the base logits; reward = ls_K(z_rm) − ls_K(z_ref); score = z_base[K] + β·reward.
One reward-model forward per step (not one per candidate), all rows in lockstep.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from aligned_llm.errors import InvalidSettingError
from aligned_llm.methods.base import MAX_FP32_SCALE, DecodingMethod, RowSpec, State, StepScores
from aligned_llm.parameters import Parameter
from aligned_llm.registry import register_method
from aligned_llm.setup import ADAPTERS_OFF, REWARD, REWARD_ADAPTER, ModelSetup

BETA = Parameter(
    "beta", float, 1.0,
    "PAD's reward weight β (the authors' w): score = z_base + β·reward; 0 = plain decoding; at most 1e30, "
    "which keeps β·reward finite in fp32",
    minimum=0.0, maximum=MAX_FP32_SCALE, ui_range=(0.0, 5.0),
)  # fmt: skip
"""β's upper bound is ``MAX_FP32_SCALE``: past about 3.4e38 β is not an fp32 number and β·reward overflows."""
K = Parameter("k", int, 10, "PAD's number of candidate tokens re-scored per step", minimum=1, ui_range=(1, 50))
PAD_BASE = Parameter(
    "pad_base", str, "profiled",
    "which context PAD's candidates and base logits come from: 'profiled' (the authors') or 'plain' (no profile)",
    choices=("profiled", "plain"),
)  # fmt: skip


@register_method
class PAD(DecodingMethod):
    """Re-score the base model's top-k tokens with a personalised reward.

    ``reward="zero-shot"`` (default): the base model with the profile in context is the
    PersRM and the base model without it the reference (rows ``profiled``/``plain``, one
    forward). ``reward="model"``: a separate PersRM model, fed the same profiled context, with
    the base as reference. ``reward="adapter"``: a LoRA PersRM on the base weights, in the
    same forward as the base row. ``base="plain"`` decodes from the row without the profile
    (zero-shot only).
    """

    name: ClassVar[str] = "pad"
    parameters: ClassVar[tuple[Parameter, ...]] = (BETA, K, PAD_BASE)
    requires: ClassVar[str | None] = "profile"
    signal_label: ClassVar[str] = "PAD β·reward of the chosen candidate"

    def __init__(self, beta: float = 1.0, k: int = 10, reward: str = "zero-shot", base: str = "profiled") -> None:
        self.beta = BETA.validate(beta)
        self.k = K.validate(k)
        if reward not in ("zero-shot", "model", "adapter"):
            raise InvalidSettingError("reward", f"must be 'zero-shot', 'model' or 'adapter', got {reward!r}")
        if base not in ("profiled", "plain") or (base == "plain" and reward != "zero-shot"):
            raise InvalidSettingError(
                "pad_base", f"must be 'profiled' (or 'plain' with the zero-shot PersRM), got {base!r}"
            )
        self.reward, self.base = reward, base
        if reward == "zero-shot":
            self.rows = (RowSpec("profiled", guided=True), RowSpec("plain", guided=False))
            self._base_row, self._reward_row, self._reference_row = (0 if base == "profiled" else 1), 0, 1
        else:
            persrm = (
                RowSpec("persrm", guided=True, model=REWARD)
                if reward == "model"
                else RowSpec("persrm", guided=True, adapter=REWARD_ADAPTER)
            )
            policy = RowSpec("policy", guided=True, adapter=None if reward == "model" else ADAPTERS_OFF)
            self.rows = (policy, persrm)
            self._base_row, self._reward_row, self._reference_row = 0, 1, 0

    @classmethod
    def build(cls, settings: Mapping[str, Any], setup: ModelSetup) -> PAD:
        """PAD with the PersRM that is loaded: a separate model, a LoRA on the policy, or zero-shot."""
        reward = "model" if setup.has(REWARD) else "adapter" if setup.has_adapter(REWARD_ADAPTER) else "zero-shot"
        return cls(beta=settings["beta"], k=settings["k"], reward=reward, base=settings["pad_base"])

    def score(self, logits: torch.Tensor, state: State, step: int) -> StepScores:
        base = logits[:, self._base_row]
        top_logits, candidates = base.topk(min(self.k, base.shape[-1]), dim=-1)
        reward_logprobs = torch.log_softmax(logits[:, self._reward_row].gather(-1, candidates), dim=-1)
        reference_logprobs = torch.log_softmax(logits[:, self._reference_row].gather(-1, candidates), dim=-1)
        weighted_reward = self.beta * (reward_logprobs - reference_logprobs)
        scores = torch.full_like(base, float("-inf")).scatter(-1, candidates, top_logits + weighted_reward)
        signal = torch.zeros_like(base).scatter(-1, candidates, weighted_reward)
        return StepScores(scores, signal, state)

    def settings(self) -> dict[str, object]:
        return {"beta": self.beta, "k": self.k, "reward": self.reward, "pad_base": self.base}
