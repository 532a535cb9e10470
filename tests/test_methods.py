"""The scoring rules as pure functions on random fp32 logits, against the spec's formulas."""

from __future__ import annotations

import pytest
import torch

from aligned_llm import OPAD, LinearAlignment, Vanilla
from aligned_llm.sampling import choose_tokens, nucleus_mask


@pytest.fixture()
def logits():
    torch.manual_seed(0)
    return torch.randn(3, 2, 50) * 3


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_opad_equivalent_form(logits, beta):
    """score = (1 + 1/β)·ls(z_c) − (1/β)·ls(z_u) + (1/β)·r~  (docs/methods.md, "OPAD")."""
    method = OPAD(beta=beta, window="last")
    previous = torch.randn(3, 2, 50)
    ls_prev = torch.log_softmax(previous, -1)
    state = {"previous_ratio": ls_prev[:, 0] - ls_prev[:, 1]}
    scores, signal, new_state, _ = method.score(logits, state, step=3)
    ls = torch.log_softmax(logits, -1)
    expected = (1 + 1 / beta) * ls[:, 0] - (1 / beta) * ls[:, 1] + (1 / beta) * state["previous_ratio"]
    torch.testing.assert_close(scores, expected)
    torch.testing.assert_close(signal, scores - ls[:, 0])
    torch.testing.assert_close(new_state["previous_ratio"], ls[:, 0] - ls[:, 1])


def test_opad_first_step_is_plain_and_reference_window_uses_prompt_mean(logits):
    prompt_mean = torch.randn(3, 2, 50)
    method = OPAD(window="reference")
    state = method.initial_state(prompt_mean)
    scores, signal, state, _ = method.score(logits, state, step=0)
    torch.testing.assert_close(scores, torch.log_softmax(logits[:, 0], -1))
    assert torch.count_nonzero(signal) == 0
    ls_mean = torch.log_softmax(prompt_mean, -1)
    torch.testing.assert_close(state["previous_ratio"], ls_mean[:, 0] - ls_mean[:, 1])


def test_opad_window_one_ignores_the_previous_step(logits):
    scores, _, state, _ = OPAD(beta=2.0, window=1).score(logits, {}, step=5)
    ls = torch.log_softmax(logits, -1)
    torch.testing.assert_close(scores, ls[:, 0] + 0.5 * (ls[:, 0] - ls[:, 1]))
    assert state == {}


def test_linear_alignment_formula_and_mask(logits):
    scores, _, _, _ = LinearAlignment(rho=2.0, mask_top_p=0.8).score(logits, {}, step=0)
    z_c, z_u = logits[:, 0], logits[:, 1]
    keep = nucleus_mask(torch.log_softmax(z_c, -1), 0.8)
    torch.testing.assert_close(scores[keep], (3 * z_c - 2 * z_u)[keep])
    assert torch.isneginf(scores[~keep]).all()


def test_nucleus_mask_keeps_the_smallest_set_reaching_top_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert nucleus_mask(probs.log(), 0.45).tolist() == [[True, False, False, False]]
    assert nucleus_mask(probs.log(), 0.6).tolist() == [[True, True, False, False]]
    assert nucleus_mask(probs.log(), 0.9).tolist() == [[True, True, True, False]]
    assert nucleus_mask(probs.log(), 0.01).tolist() == [[True, False, False, False]]
    assert nucleus_mask(probs.log(), 1.0).all()


def test_choose_tokens_greedy_and_sampled():
    scores = torch.log(torch.tensor([[0.1, 0.6, 0.3], [0.7, 0.2, 0.1]]))
    assert choose_tokens(scores, temperature=0.0, top_p=1.0, generators=None).tolist() == [1, 0]
    generators = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)]
    draws = torch.stack([choose_tokens(scores, temperature=1.0, top_p=0.65, generators=generators) for _ in range(200)])
    assert set(draws[:, 1].tolist()) == {0}, "top-p 0.65 leaves one token in the second row"
    assert set(draws[:, 0].tolist()) == {1, 2}
    frequency = (draws[:, 0] == 1).float().mean().item()
    assert 0.55 < frequency < 0.8, "0.6 / (0.6 + 0.3) = 0.67 expected"


def test_vanilla_is_log_softmax_of_the_only_row(logits):
    scores, signal, _, _ = Vanilla().score(logits[:, :1], {}, step=0)
    torch.testing.assert_close(scores, torch.log_softmax(logits[:, 0], -1))
    assert torch.count_nonzero(signal) == 0
