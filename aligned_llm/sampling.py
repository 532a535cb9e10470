"""Turning a method's final scores into token ids: greedy, or seeded sampling with top-p."""

from __future__ import annotations

import torch


def nucleus_mask(logprobs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Boolean mask of the smallest set of tokens whose probability mass reaches ``top_p``.

    The most likely token is always kept; ``logprobs`` is ``[B, V]``.
    """
    if top_p >= 1.0:
        return torch.ones_like(logprobs, dtype=torch.bool)
    sorted_logprobs, order = torch.sort(logprobs, dim=-1, descending=True)
    mass_before = torch.cumsum(sorted_logprobs.exp(), dim=-1) - sorted_logprobs.exp()
    keep_sorted = mass_before < top_p
    keep_sorted[:, 0] = True
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def choose_tokens(
    scores: torch.Tensor,
    *,
    temperature: float,
    top_p: float,
    generators: list[torch.Generator] | None,
    tie_break: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pick one token per row of ``scores`` (``[B, V]`` fp32): argmax when temperature is 0.

    Sampling draws from softmax(scores / temperature) restricted to the top-p nucleus, on the
    CPU with one generator per request, so a seeded result does not depend on the device or
    on which other requests share the batch. ``tie_break`` orders exact ties in greedy mode.
    """
    if temperature == 0.0:
        if tie_break is None:
            return scores.argmax(dim=-1)
        tied = scores == scores.max(dim=-1, keepdim=True).values
        return tie_break.masked_fill(~tied, float("-inf")).argmax(dim=-1)
    logprobs = torch.log_softmax(scores / temperature, dim=-1)
    logprobs = logprobs.masked_fill(~nucleus_mask(logprobs, top_p), float("-inf"))
    probs = torch.softmax(logprobs, dim=-1).cpu()
    picks = [
        torch.multinomial(probs[row], 1, generator=None if generators is None else generators[row])
        for row in range(probs.shape[0])
    ]
    return torch.cat(picks).to(scores.device)
