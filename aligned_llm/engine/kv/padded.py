"""The ``padded`` KV store: one ``DynamicCache`` per lane, rows left-padded to the longest, and prefill.

Every store starts from a :class:`Prefill`: the rows' prompts, left-padded to one width and
run ``PREFILL_CHUNK`` positions per forward into a ``DynamicCache``. The padded store then
decodes on that cache: each step appends one position to every row, rows that leave are cut
out (with the padding no row needs any more), and newcomers are concatenated after the running
rows, the shorter cache padded on the left to align them. Simple and exact, but the shapes
change at every step and every join re-allocates the caches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicCache, DynamicLayer

from aligned_llm.engine.kv.base import KVLane, KVStore
from aligned_llm.engine.kv.forward import forward_rows

PREFILL_CHUNK = 512
"""Prompt positions per prefill forward: a long prompt is prefilled in chunks, so cancel() acts between them
and a running batch keeps stepping while a newcomer prefills."""


def mergeable_cache(cache: object) -> bool:
    """Whether rows can be added to or removed from ``cache`` along the batch with left-padding alignment."""
    layers = getattr(cache, "layers", None)
    return isinstance(cache, DynamicCache) and bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


class PaddedLane(KVLane):
    """Rows left-padded and right-aligned in one ``DynamicCache``."""

    def __init__(
        self,
        model: PreTrainedModel,
        adapters: list[str | None],
        spans: list[int],
        cache: object,
        attention_mask: torch.Tensor,
        next_positions: torch.Tensor,
    ) -> None:
        self.model = model
        self.adapters = adapters
        self.spans = spans
        self.cache = cache
        self.attention_mask = attention_mask
        """``[rows, length]``: 1 where a row has a token, 0 on its left padding."""
        self.next_positions = next_positions

    @property
    def length(self) -> int:
        """Cache positions per row, padding included."""
        return int(self.attention_mask.shape[1])

    @property
    def mergeable(self) -> bool:
        return mergeable_cache(self.cache)

    def step(self, input_ids: torch.Tensor) -> torch.Tensor:
        input_ids = input_ids.to(self.model.device).unsqueeze(-1)
        ones = torch.ones((self.rows, 1), dtype=self.attention_mask.dtype, device=self.attention_mask.device)
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=-1)
        output = forward_rows(
            self.model,
            self.adapters,
            input_ids=input_ids,
            attention_mask=self.attention_mask,
            position_ids=self.next_positions.unsqueeze(-1),
            cache=self.cache,
        )
        self.cache = output.cache
        self.next_positions = self.next_positions + 1
        return output.logits[:, -1].float()

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows``; cut the leading positions that are padding on every row left."""
        if not rows:
            self.cache, self.adapters, self.spans = None, [], []
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.attention_mask.device)
        mask = self.attention_mask[index]
        lead = int(mask.argmax(-1).min())
        if self.mergeable:
            for layer in self.cache.layers:
                layer.keys = layer.keys[index.to(layer.keys.device), :, lead:]
                layer.values = layer.values[index.to(layer.values.device), :, lead:]
        else:
            self.cache.batch_select_indices(index)
            lead = 0
        self.attention_mask = mask[:, lead:]
        self.next_positions = self.next_positions[index]
        self.adapters = [self.adapters[row] for row in rows]
        self.spans = [self.spans[row] for row in rows]

    def extend(self, other: KVLane) -> None:
        """Append ``other``'s rows, padding the shorter cache on the left to align them."""
        assert isinstance(other, PaddedLane)
        width = max(self.length, other.length)
        for layer, joining in zip(self.cache.layers, other.cache.layers, strict=True):
            layer.keys = torch.cat([_left_pad(layer.keys, width), _left_pad(joining.keys, width)])
            layer.values = torch.cat([_left_pad(layer.values, width), _left_pad(joining.values, width)])
        self.attention_mask = torch.cat(
            [_left_pad(self.attention_mask, width, dim=1), _left_pad(other.attention_mask, width, dim=1)]
        )
        self.next_positions = torch.cat([self.next_positions, other.next_positions])
        self.adapters = self.adapters + other.adapters
        self.spans = self.spans + other.spans


def _left_pad(tensor: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    """``tensor`` with zeros prepended along ``dim`` up to ``width`` positions."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class Prefill:
    """Some rows' prompts on one model, prefilled ``PREFILL_CHUNK`` positions per forward; ends as a lane."""

    def __init__(
        self,
        model: PreTrainedModel,
        prompts: list[Sequence[int]],
        adapters: list[str | None],
        spans: list[int],
        pad_id: int,
        keep_all_logits: bool,
    ) -> None:
        device = model.device
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[row, width - len(ids) :] = 1
        self.model = model
        self.adapters = adapters
        self.spans = spans
        self.input_ids, self.mask = input_ids.to(device), mask.to(device)
        self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        self.keep_all_logits = keep_all_logits
        self.cache: object = None
        self.start = 0
        self.last = torch.empty(0)
        self.logit_sum: torch.Tensor | None = None

    @property
    def done(self) -> bool:
        return self.start >= self.input_ids.shape[1]

    def advance(self) -> None:
        """Run the next chunk of the prompts, one forward under the model's lock."""
        start, end = self.start, min(self.start + PREFILL_CHUNK, self.input_ids.shape[1])
        output = forward_rows(
            self.model,
            self.adapters,
            input_ids=self.input_ids[:, start:end],
            attention_mask=self.mask[:, :end],
            position_ids=self.positions[:, start:end],
            cache=self.cache,
            logits_to_keep=0 if self.keep_all_logits else 1,
        )
        with torch.inference_mode():
            self.cache = output.cache
            self.last = output.logits[:, -1].float()
            if self.keep_all_logits:
                weights = self.mask[:, start:end].unsqueeze(-1).float()
                chunk_sum = (output.logits.float() * weights).sum(1)
                self.logit_sum = chunk_sum if self.logit_sum is None else self.logit_sum + chunk_sum
        self.start = end

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` before the prefill ends (the others' requests were cancelled)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.input_ids, self.mask, self.positions = self.input_ids[index], self.mask[index], self.positions[index]
        self.adapters = [self.adapters[row] for row in rows]
        self.spans = [self.spans[row] for row in rows]
        if self.cache is not None:
            self.cache.batch_select_indices(index)
            self.last = self.last[index]
            if self.logit_sum is not None:
                self.logit_sum = self.logit_sum[index]

    def finish(self) -> tuple[PaddedLane, torch.Tensor, torch.Tensor | None]:
        """The lane holding the prefilled rows, their last-position logits ``[N, V]`` and prompt-mean logits."""
        lane = PaddedLane(self.model, self.adapters, self.spans, self.cache, self.mask, self.mask.sum(-1))
        mean = None if self.logit_sum is None else self.logit_sum / self.mask.sum(-1, keepdim=True).float()
        return lane, self.last, mean


class PaddedStore(KVStore):
    """Running lanes are the prefilled ``DynamicCache`` lanes themselves."""

    name = "padded"

    def adopt(self, prefilled: KVLane) -> KVLane:
        return prefilled
