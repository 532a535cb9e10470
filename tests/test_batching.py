"""Batching is invisible: padded batches give, row for row, the tokens of each prompt alone."""

from __future__ import annotations

import pytest
import torch

from aligned_llm import OPAD

PROMPTS = [
    "Hi",
    "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle.",
    "What is 2 + 2?",
    [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Name three colours of the rainbow."}],
]
PRINCIPLE = "Always answer like a pirate."


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"principle": PRINCIPLE},
        {"method": "opad", "principle": PRINCIPLE},
        {"method": "opad", "principle": PRINCIPLE, "beta": 0.1},
        {"method": "opad", "principle": PRINCIPLE, "opad_window": 1, "beta": 0.5},
        {"method": "linear", "principle": PRINCIPLE},
        {"temperature": 0.8, "top_p": 0.9, "seed": 7},
        {"method": "opad", "principle": PRINCIPLE, "temperature": 1.0, "seed": 3},
    ],
    ids=["vanilla", "direct", "opad", "opad-strong", "opad-window1", "linear", "vanilla-sampled", "opad-sampled"],
)
def test_batch_equals_each_prompt_alone(tiny_llm, settings):
    batch = tiny_llm.generate(PROMPTS, max_new_tokens=10, **settings)
    alone = [tiny_llm.generate(prompt, max_new_tokens=10, **settings) for prompt in PROMPTS]
    assert [r.token_ids for r in batch] == [r.token_ids for r in alone]
    assert [r.text for r in batch] == [r.text for r in alone]
    assert len({r.input_tokens for r in batch}) == len(PROMPTS), "prompts must have different lengths"


def test_requests_that_finish_early_leave_the_batch_without_disturbing_others(tiny_llm):
    """Different max_new_tokens per request is not exposed, but stop strings end rows early."""
    long_alone = tiny_llm.generate(PROMPTS[1], method="opad", principle=PRINCIPLE, max_new_tokens=16)
    early = long_alone.text[: max(1, len(long_alone.text) // 4)]
    stop = early[-3:] if len(early) >= 3 else early
    batch = tiny_llm.generate(PROMPTS[:2], method="opad", principle=PRINCIPLE, max_new_tokens=16, stop=[stop])
    alone = [
        tiny_llm.generate(p, method="opad", principle=PRINCIPLE, max_new_tokens=16, stop=[stop]) for p in PROMPTS[:2]
    ]
    assert [r.token_ids for r in batch] == [r.token_ids for r in alone]
    assert batch[1].finish_reason == "stop"
    assert batch[1].output_tokens < 16


def test_sampling_is_seeded_and_seed_matters(tiny_llm):
    first = tiny_llm.generate(PROMPTS[1], temperature=1.0, seed=1, max_new_tokens=12)
    again = tiny_llm.generate(PROMPTS[1], temperature=1.0, seed=1, max_new_tokens=12)
    other = tiny_llm.generate(PROMPTS[1], temperature=1.0, seed=2, max_new_tokens=12)
    greedy = tiny_llm.generate(PROMPTS[1], max_new_tokens=12)
    assert first.token_ids == again.token_ids
    assert first.token_ids != other.token_ids
    assert first.token_ids != greedy.token_ids


class _RecordPromptLogits(OPAD):
    """OPAD that keeps the prompt-mean logits the engine hands it, to compare across batches."""

    def __init__(self) -> None:
        super().__init__(beta=1.0, window="reference")
        self.seen: list[torch.Tensor] = []

    def initial_state(self, prompt_logits):
        self.seen.append(prompt_logits.clone())
        return super().initial_state(prompt_logits)


def test_prompt_mean_logits_ignore_padding(tiny_llm):
    method = _RecordPromptLogits()
    tiny_llm.generate(PROMPTS, method=method, principle=PRINCIPLE, max_new_tokens=1)
    for prompt in PROMPTS:
        tiny_llm.generate(prompt, method=method, principle=PRINCIPLE, max_new_tokens=1)
    batched, alone = method.seen[0], torch.cat(method.seen[1:])
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-4)
