"""The ``static`` KV store: a preallocated pool of row slots × positions, so decode steps have fixed shapes.

Layout: per layer, one key and one value tensor ``[slots, kv_heads, positions, head_dim]``. A row
holds one slot; its keys sit at positions ``0 … length-1`` of it, unpadded. Running rows occupy
slots ``0 … rows-1`` (a row that leaves is replaced by moving the rows after it up; a copy at
the leave, never one per step), so a step's rows are a view of the pool's first slots.

A step runs on a *bucket*: the rows rounded up to a power of two (the extra slots are free and
run a dummy token whose writes nobody reads) and the positions attended rounded up to
``LENGTH_QUANTUM`` (the positions a row has not written are masked out). Shapes therefore take
only a few values over a whole run, which is what ``torch.compile`` and CUDA graphs need; each
row's new key and value are written in place at its own position.

Why slots and not pages: vLLM and transformers' continuous batching page the KV cache so that
memory follows each request's actual length, but attending over pages needs paged-attention
kernels (flash-attention varlen, FlexAttention block masks) that CPU builds and eager PyTorch do
not offer for every model. A slot pool works with any model whose attention calls
``cache.update`` and takes a 4-D mask, on CPU and CUDA alike; its cost is that each slot
reserves the longest span (prompt + ``max_new_tokens``) admitted, which the batch budget
(rows × longest span ≤ ``max_kv_tokens``) already accounts for.

The pool is allocated when the first rows join and grows (to a power-of-two slot count and a
``LENGTH_QUANTUM`` multiple of positions) only when joining rows need more; it is handed back to
its :class:`SlotPools` when the lane empties and reused by the next one, so its addresses stay
put across a run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from transformers import PreTrainedModel

from aligned_llm.engine.kv.base import KVLane, KVStore
from aligned_llm.engine.kv.forward import forward_rows
from aligned_llm.engine.kv.padded import PaddedLane, mergeable_cache

LENGTH_QUANTUM = 128
"""Attended positions are rounded up to a multiple of this, so few distinct shapes occur."""


def row_bucket(rows: int) -> int:
    """The power of two a step with ``rows`` rows runs on."""
    return 1 << max(rows - 1, 0).bit_length()


def length_bucket(positions: int, limit: int) -> int:
    """``positions`` rounded up to a multiple of ``LENGTH_QUANTUM``, at most ``limit``."""
    return min(limit, -(-positions // LENGTH_QUANTUM) * LENGTH_QUANTUM)


class SlotPool:
    """Key and value tensors ``[slots, kv_heads, positions, head_dim]`` for every layer of one model."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        self.keys = keys
        self.values = values

    @classmethod
    def allocate(cls, like: list[tuple[torch.Tensor, torch.Tensor]], slots: int, positions: int) -> SlotPool:
        """A zeroed pool shaped after ``like`` (one ``(keys, values)`` pair per layer)."""
        with torch.inference_mode():
            keys = [k.new_zeros((slots, k.shape[1], positions, k.shape[3])) for k, _ in like]
            values = [v.new_zeros((slots, v.shape[1], positions, v.shape[3])) for _, v in like]
        return cls(keys, values)

    @property
    def slots(self) -> int:
        return int(self.keys[0].shape[0])

    @property
    def positions(self) -> int:
        return int(self.keys[0].shape[2])

    def holds(self, slots: int, positions: int) -> bool:
        return self.slots >= slots and self.positions >= positions


class SlotPools:
    """Free pools per model, kept between lanes so a run reuses one allocation (and its addresses)."""

    def __init__(self, static_addresses: bool = False) -> None:
        self._free: dict[int, SlotPool] = {}
        self._lock = threading.Lock()
        self.static_addresses = static_addresses
        """Mark new pools as static addresses for CUDA graphs (``torch._dynamo.mark_static_address``)."""

    def take(
        self, model: PreTrainedModel, like: list[tuple[torch.Tensor, torch.Tensor]], slots: int, positions: int
    ) -> SlotPool:
        """A pool of at least ``slots`` × ``positions`` for ``model``: the free one if it holds them, else a new one."""
        with self._lock:
            pool = self._free.pop(id(model), None)
        if pool is not None and pool.holds(slots, positions):
            return pool
        if pool is not None:
            slots, positions = max(slots, pool.slots), max(positions, pool.positions)
        pool = SlotPool.allocate(like, row_bucket(slots), -(-positions // LENGTH_QUANTUM) * LENGTH_QUANTUM)
        if self.static_addresses:
            for tensor in (*pool.keys, *pool.values):
                torch._dynamo.mark_static_address(tensor)
        return pool

    def give_back(self, model: PreTrainedModel, pool: SlotPool) -> None:
        """Keep ``pool`` for the next lane of ``model`` (the larger one if two are handed back)."""
        with self._lock:
            kept = self._free.get(id(model))
            if kept is None or pool.slots * pool.positions >= kept.slots * kept.positions:
                self._free[id(model)] = pool


class _SlotWriter:
    """What the model sees as its cache for one step: writes each row's new key/value at its position."""

    def __init__(self, pool: SlotPool, rows: int, attended: int, positions: torch.Tensor) -> None:
        self.pool = pool
        self.rows = rows
        self.attended = attended
        self.positions = positions
        self.slots = torch.arange(rows, device=positions.device)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.pool.keys[layer_idx], self.pool.values[layer_idx]
        keys[self.slots, :, self.positions] = key_states[:, :, 0]
        values[self.slots, :, self.positions] = value_states[:, :, 0]
        return keys[: self.rows, :, : self.attended], values[: self.rows, :, : self.attended]


class SlotLane(KVLane):
    """Rows in the first slots of a :class:`SlotPool`; one token each per step, written in place."""

    def __init__(
        self, model: PreTrainedModel, pools: SlotPools, pad_id: int, call: Callable[..., object] | None = None
    ) -> None:
        self.model = model
        self.call = call
        self.adapters = []
        self.pools = pools
        self.pad_id = pad_id
        self.pool: SlotPool | None = None
        self.lengths: list[int] = []
        """Positions each row has written (its next token's position), on the host: no sync per step."""
        self.positions: torch.Tensor | None = None
        """The same on the device, one per slot (0 on free slots): copied at joins and leaves, stepped in place."""
        self.spans = []

    @property
    def mergeable(self) -> bool:
        return True

    def step(self, input_ids: torch.Tensor) -> torch.Tensor:
        assert self.pool is not None
        assert self.positions is not None
        rows = self.rows
        bucket = row_bucket(rows)
        device = self.pool.keys[0].device
        attended = length_bucket(max(self.lengths) + 1, self.pool.positions)
        positions = self.positions[:bucket]
        ids = torch.full((bucket,), self.pad_id, dtype=torch.long, device=device)
        ids[:rows] = input_ids.to(device)
        dtype = self.pool.keys[0].dtype
        allowed = torch.arange(attended, device=device) <= positions.unsqueeze(-1)
        mask = torch.zeros((bucket, 1, 1, attended), dtype=dtype, device=device)
        mask.masked_fill_(~allowed.view(bucket, 1, 1, attended), torch.finfo(dtype).min)
        output = forward_rows(
            self.model,
            self.adapters + [None] * (bucket - rows),
            self.call,
            input_ids=ids.unsqueeze(-1),
            attention_mask=mask,
            position_ids=positions.unsqueeze(-1),
            cache=_SlotWriter(self.pool, bucket, attended, positions),
        )
        self.lengths = [length + 1 for length in self.lengths]
        with torch.inference_mode():
            self.positions[:rows] += 1
            logits = output.logits[:rows, -1].float()
            # a CUDA graph's outputs are overwritten by its next replay: keep a copy of our own
            return logits if self.call is None else logits.clone()

    def keep(self, rows: list[int]) -> None:
        """Keep ``rows``, moving them up to the first slots (no copy when only the last rows leave)."""
        if self.pool is not None and rows != list(range(len(rows))):
            index = torch.tensor(rows, dtype=torch.long, device=self.pool.keys[0].device)
            with torch.inference_mode():
                for tensor in (*self.pool.keys, *self.pool.values):
                    tensor[: len(rows)] = tensor[index]
        self.lengths = [self.lengths[row] for row in rows]
        self.spans = [self.spans[row] for row in rows]
        self.adapters = [self.adapters[row] for row in rows]
        if not rows and self.pool is not None:
            self.pools.give_back(self.model, self.pool)
            self.pool, self.positions = None, None
        self._copy_positions()

    def extend(self, other: KVLane) -> None:
        """Copy a prefilled lane's rows (left-padded ``DynamicCache``) into the next free slots."""
        if not isinstance(other, PaddedLane) or not mergeable_cache(other.cache):
            raise TypeError("a static lane takes rows from a prefilled padded lane with full-attention layers")
        layers = [(layer.keys, layer.values) for layer in other.cache.layers]
        lengths = [int(length) for length in other.attention_mask.sum(-1).tolist()]
        spans = other.spans
        first = self.rows
        self._reserve(layers, first + other.rows, max(self.spans + spans))
        assert self.pool is not None
        width = other.length
        with torch.inference_mode():
            for (keys, values), pool_keys, pool_values in zip(layers, self.pool.keys, self.pool.values, strict=True):
                for row, length in enumerate(lengths):
                    pool_keys[first + row, :, :length] = keys[row, :, width - length :]
                    pool_values[first + row, :, :length] = values[row, :, width - length :]
        self.lengths += lengths
        self.spans += spans
        self.adapters = self.adapters + other.adapters
        self._copy_positions()

    def _copy_positions(self) -> None:
        """Put the host's row lengths on the device, zeros on the free slots (at joins and leaves only)."""
        if self.pool is None:
            return
        padding = [0] * (self.pool.slots - self.rows)
        with torch.inference_mode():
            self.positions = torch.tensor(self.lengths + padding, dtype=torch.long).to(self.pool.keys[0].device)

    def _reserve(self, like: list[tuple[torch.Tensor, torch.Tensor]], rows: int, positions: int) -> None:
        """Make the pool hold ``rows`` slots of ``positions`` positions, keeping the running rows."""
        if self.pool is not None and self.pool.holds(rows, positions):
            return
        old = self.pool
        if old is not None:
            rows, positions = max(rows, old.slots), max(positions, old.positions)
        self.pool = self.pools.take(self.model, like, rows, positions)
        if old is not None and old is not self.pool:
            with torch.inference_mode():
                for new, kept in zip((*self.pool.keys, *self.pool.values), (*old.keys, *old.values), strict=True):
                    new[: self.rows, :, : old.positions] = kept[: self.rows]


class StaticStore(KVStore):
    """Running lanes are :class:`SlotLane`s; their pools are kept per model between lanes.

    With ``compiled``, each model's decode forward is ``torch.compile``d once per shape bucket
    (on CUDA with ``mode="reduce-overhead"``: CUDA graphs, the pools marked as static addresses).
    """

    name = "static"

    def __init__(self, pad_id: int, compiled: bool = False) -> None:
        self.pad_id = pad_id
        self.pools = SlotPools(static_addresses=compiled)
        self.compiled = compiled
        self._forwards: dict[int, Callable[..., object]] = {}

    def adopt(self, prefilled: KVLane) -> KVLane:
        lane = SlotLane(prefilled.model, self.pools, self.pad_id, self.decode_forward(prefilled.model))
        lane.extend(prefilled)
        return lane

    def decode_forward(self, model: PreTrainedModel) -> Callable[..., object] | None:
        """The compiled forward of ``model`` (built once), or ``None`` to run it eagerly."""
        if not self.compiled:
            return None
        if id(model) not in self._forwards:
            mode = "reduce-overhead" if model.device.type == "cuda" else None
            self._forwards[id(model)] = torch.compile(model.forward, dynamic=False, mode=mode)
        return self._forwards[id(model)]
