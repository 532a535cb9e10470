"""Turning a method's final scores into token ids: greedy, or seeded sampling with top-p."""

from __future__ import annotations

from collections.abc import Sequence

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


def penalize_repeats(
    scores: torch.Tensor, generated: Sequence[Sequence[int]], frequency: float, presence: float
) -> torch.Tensor:
    """OpenAI's repetition penalties on ``scores [B, V]``: ``score[j] - c[j]·frequency - (c[j] > 0)·presence``.

    ``c[j]`` counts token ``j`` in row ``b``'s generated tokens (``generated[b]``; the prompt is
    not counted), as in OpenAI's ``frequency_penalty`` and ``presence_penalty``. The engine applies
    them last, to the scores a token is chosen from (after the method and the grammar, so
    also inside tool calls and JSON answers); a new tensor is returned.
    """
    counts = torch.zeros_like(scores)
    for row, tokens in enumerate(generated):
        if tokens:
            counts[row] = torch.bincount(torch.tensor(tokens), minlength=scores.shape[-1]).to(scores)
    return scores - counts * frequency - (counts > 0).to(scores) * presence


def sampling_logprobs(scores: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Log-softmax of ``scores / temperature``, everything outside the top-p nucleus at -inf (``temperature > 0``)."""
    logprobs = torch.log_softmax(scores / temperature, dim=-1)
    return logprobs.masked_fill(~nucleus_mask(logprobs, top_p), float("-inf"))


def pick_tokens(
    scores: torch.Tensor,
    *,
    sample: bool,
    generators: list[torch.Generator] | None,
    tie_break: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token per row of ``scores`` (``[B, V]`` fp32): the argmax, or a draw from their softmax.

    Draws are made on the CPU with one generator per request, so a seeded result does not
    depend on the device or on which other requests share the batch. ``tie_break`` orders
    exact ties in greedy mode (default: the lowest token id, as ``argmax`` does).
    """
    if not sample:
        if tie_break is None:
            return scores.argmax(dim=-1)
        tied = scores == scores.max(dim=-1, keepdim=True).values
        return tie_break.masked_fill(~tied, float("-inf")).argmax(dim=-1)
    probs = torch.softmax(scores, dim=-1).cpu()
    picks = [
        torch.multinomial(probs[row], 1, generator=None if generators is None else generators[row])
        for row in range(probs.shape[0])
    ]
    return torch.cat(picks).to(scores.device)


def choose_tokens(
    scores: torch.Tensor,
    *,
    temperature: float,
    top_p: float,
    generators: list[torch.Generator] | None,
    tie_break: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pick one token per row of ``scores``: argmax when temperature is 0, else a draw from the top-p nucleus."""
    if temperature == 0.0:
        return pick_tokens(scores, sample=False, generators=None, tie_break=tie_break)
    return pick_tokens(sampling_logprobs(scores, temperature, top_p), sample=True, generators=generators)
