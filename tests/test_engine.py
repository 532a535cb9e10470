"""The engine runs rows on different models in lockstep (the shape PAD and AAD build on)."""

from __future__ import annotations

from typing import ClassVar

import torch

from aligned_llm.engine import Engine, EngineRequest
from aligned_llm.methods.base import DecodingMethod, RowSpec, StepScores
from aligned_llm.testing import build_tiny_model
from tests.reference import full_logits


class ProductOfExperts(DecodingMethod):
    """score = ls(z_policy) + ls(z_other): needs one row on each of two models."""

    name: ClassVar[str] = "product"
    rows: ClassVar[tuple[RowSpec, ...]] = (
        RowSpec("policy", guided=True),
        RowSpec("other", guided=True, model="other"),
    )

    def score(self, logits, state, step):
        scores = torch.log_softmax(logits[:, 0], -1) + torch.log_softmax(logits[:, 1], -1)
        return StepScores(scores, scores - torch.log_softmax(logits[:, 0], -1), state)


def _naive(policy, other, ids, steps):
    out = []
    for _ in range(steps):
        score = torch.log_softmax(full_logits(policy, ids + out)[-1], -1) + torch.log_softmax(
            full_logits(other, ids + out)[-1], -1
        )
        out.append(int(score.argmax()))
    return out


def test_rows_on_two_models_match_a_naive_recomputation(tiny_llm, tokenizer):
    other = build_tiny_model(seed=5, vocab_size=len(tokenizer))
    engine = Engine({"policy": tiny_llm.model, "other": other}, tokenizer, stop_token_ids=(), pad_token_id=2)
    prompts = [tokenizer(text)["input_ids"] for text in ("Hello there", "A much longer prompt about the sea", "Hi")]
    requests = [EngineRequest([ids, ids], max_new_tokens=8) for ids in prompts]
    results = {e.index: e.result for e in engine.run(requests, ProductOfExperts()) if e.result is not None}
    for index, ids in enumerate(prompts):
        assert list(results[index].token_ids) == _naive(tiny_llm.model, other, ids, 8)
    alone = _naive(tiny_llm.model, tiny_llm.model, prompts[0], 8)
    assert alone != _naive(tiny_llm.model, other, prompts[0], 8), "the second model must matter"
