"""The KV store interface: the rows one model runs, each with its KV cache, one token each per step.

The engine and the batch see only this interface; how the keys and values are laid out is the
store's business. Two stores implement it: ``padded`` (``DynamicCache`` lanes, left-padded and
concatenated as rows come and go) and ``static`` (a preallocated pool of row slots with fixed
shapes, so a decode step can be captured). Rows are always in their batch order: row ``i`` of
``step``'s input and output is the lane's ``i``-th row.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from transformers import PreTrainedModel


class KVLane(ABC):
    """The rows one model runs and their caches."""

    model: PreTrainedModel
    adapters: list[str | None]
    """Each row's LoRA adapter (``None``: the model as loaded)."""
    spans: list[int]
    """Positions each row may reach: its prompt plus every token it may generate."""

    @property
    def rows(self) -> int:
        return len(self.adapters)

    @property
    @abstractmethod
    def mergeable(self) -> bool:
        """Whether rows can join this lane (false for caches that cannot be merged, e.g. sliding windows)."""

    @abstractmethod
    def step(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Feed one token to each row (``[rows]``); return the next logits ``[rows, V]`` in fp32."""

    @abstractmethod
    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in their order); the others' caches are freed."""

    @abstractmethod
    def extend(self, other: KVLane) -> None:
        """Append ``other``'s rows (a lane of the same store and model) after this lane's."""


class KVStore(ABC):
    """How the running rows of each model keep their caches; one per engine."""

    name: str

    @abstractmethod
    def adopt(self, prefilled: KVLane) -> KVLane:
        """A running lane of this store holding a freshly prefilled lane's rows."""
