"""PAD: personalised alignment at decoding time (arXiv 2410.04070), as in the authors' inference.

K = top-k of the base logits; reward = ls_K(z_rm) − ls_K(z_ref); score = z_base[K] + β·reward.
One reward-model forward per step (not one per candidate), all rows in lockstep.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from aligned_llm.errors import InvalidSettingError
from aligned_llm.methods.base import DecodingMethod, RowSpec, State, StepScores

REWARD_ADAPTER = "persrm"
"""Adapter name under which a LoRA PersRM is attached to the policy model."""


def validate_k(k: int) -> int:
    """k must be an integer >= 1."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidSettingError("k", f"must be an integer >= 1, got {k!r}")
    return k


def validate_pad_beta(beta: float) -> float:
    """PAD's β (the reference's ``w``) must be a finite number >= 0; 0 gives plain decoding."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < float("inf"):
        raise InvalidSettingError("beta", f"must be a finite number >= 0 for PAD, got {beta!r}")
    return float(beta)


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
    requires: ClassVar[str | None] = "profile"

    def __init__(self, beta: float = 1.0, k: int = 10, reward: str = "zero-shot", base: str = "profiled") -> None:
        self.beta = validate_pad_beta(beta)
        self.k = validate_k(k)
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
                RowSpec("persrm", guided=True, model="reward")
                if reward == "model"
                else RowSpec("persrm", guided=True, adapter=REWARD_ADAPTER)
            )
            policy = RowSpec("policy", guided=True, adapter=None if reward == "model" else "__base__")
            self.rows = (policy, persrm)
            self._base_row, self._reward_row, self._reference_row = 0, 1, 0

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
