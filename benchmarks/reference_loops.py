"""The peers' way of decoding with two contexts, for side-by-side timing in ``throughput.py``.

- ``opad_reference_loop``: the OPAD authors' loop (``infer_*.py`` in stevie1023/OPAD): one
  prompt at a time, the constrained and unconstrained contexts as two *sequential* batch-1
  forwards per step, each with its own KV cache.
- ``pad_reference_loop``: the PAD authors' loop (``inference/PAD.py`` in zjuruizhechen/PAD):
  one prompt at a time, *no* KV cache (the whole sequence is re-run every step), one forward
  for the base/PersRM row and one for the reference row, top-k re-scoring with k = 10.
- ``cfg_generate``: transformers' own two-context decoder, classifier-free guidance with a
  negative prompt (``guidance_scale`` + ``negative_prompt_ids``), whose second forward runs
  sequentially after the first.

These are straightforward re-implementations written for timing: they compute the
published scores, but only their cost is compared (correctness is the library's tests' job).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedModel


@torch.inference_mode()
def opad_reference_loop(model: PreTrainedModel, prompts: list[tuple[list[int], list[int]]], new_tokens: int) -> int:
    """Decode ``new_tokens`` per (constrained, unconstrained) prompt pair; returns tokens made."""
    device = model.device
    made = 0
    for constrained, unconstrained in prompts:
        caches = [DynamicCache(), DynamicCache()]
        inputs = [torch.tensor([constrained], device=device), torch.tensor([unconstrained], device=device)]
        for _ in range(new_tokens):
            logits = [model(input_ids=ids, cache=cache, use_cache=True).logits[:, -1].float()
                      for ids, cache in zip(inputs, caches, strict=True)]  # fmt: skip
            with_principle, without = (torch.log_softmax(x, dim=-1) for x in logits)
            token = (with_principle + (with_principle - without)).argmax(-1, keepdim=True)
            inputs = [token, token]
            made += 1
    return made


@torch.inference_mode()
def pad_reference_loop(
    model: PreTrainedModel, prompts: list[tuple[list[int], list[int]]], new_tokens: int, k: int = 10
) -> int:
    """Decode ``new_tokens`` per (profiled, plain) prompt pair without a KV cache; returns tokens made."""
    device = model.device
    made = 0
    for profiled, plain in prompts:
        sequences = [torch.tensor([profiled], device=device), torch.tensor([plain], device=device)]
        for _ in range(new_tokens):
            base, reference = (model(input_ids=ids, use_cache=False).logits[:, -1].float() for ids in sequences)
            top, candidates = base.topk(k, dim=-1)
            reward = torch.log_softmax(base.gather(-1, candidates), -1) - torch.log_softmax(
                reference.gather(-1, candidates), -1
            )
            token = candidates.gather(-1, (top + reward).argmax(-1, keepdim=True))
            sequences = [torch.cat([ids, token], dim=-1) for ids in sequences]
            made += 1
    return made


def left_pad(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows left-padded to one width with ``pad``, and their attention mask."""
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask


@torch.inference_mode()
def cfg_generate(
    model: PreTrainedModel,
    prompts: list[tuple[list[int], list[int]]],
    new_tokens: int,
    pad_token_id: int,
    guidance_scale: float = 3.0,
) -> int:
    """transformers' CFG over (conditional, negative) prompt pairs, batched; returns tokens made.

    ``guidance_scale = 1 + ρ`` makes the score ``(1+ρ)·c − ρ·u`` of Linear Alignment with ρ = 2.
    """
    ids, mask = left_pad([c for c, _ in prompts], pad_token_id, model.device)
    negative_ids, negative_mask = left_pad([u for _, u in prompts], pad_token_id, model.device)
    out = model.generate(
        input_ids=ids, attention_mask=mask, negative_prompt_ids=negative_ids,
        negative_prompt_attention_mask=negative_mask, guidance_scale=guidance_scale, do_sample=False,
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=pad_token_id,
    )  # fmt: skip
    return (out.shape[1] - ids.shape[1]) * len(prompts)
