"""One forward of a model over some rows: the model's lock and each row's LoRA adapter."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from transformers import PreTrainedModel

from aligned_llm.lora_gate import lora_gate
from aligned_llm.setup import ADAPTERS_OFF, LOADED_ADAPTER

_MODEL_LOCKS: weakref.WeakKeyDictionary[torch.nn.Module, threading.Lock] = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock(model: torch.nn.Module) -> threading.Lock:
    """The lock held for each forward of ``model``, whoever runs it.

    peft's per-row adapter routing patches modules for the duration of a call, so two
    forwards of one model must not overlap, even from two ``AlignedLLM`` sharing the model.
    """
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.Lock()
        return lock


@contextmanager
def adapter_routing(model: PreTrainedModel, adapters: Sequence[str | None]) -> Iterator[dict[str, object]]:
    """Route each row to its adapter for one forward; yield the forward's extra kwargs.

    Rows that ask for none run the model as loaded: its ``default`` adapter if it has one,
    else the base weights. The per-row LoRA gate is used where it applies, else peft's
    ``adapter_names``.
    """
    loaded_adapters = getattr(model, "peft_config", None)
    if loaded_adapters is None:
        if any(adapter is not None for adapter in adapters):
            raise ValueError(f"rows ask for adapters {list(adapters)} but the model has no peft adapters")
        yield {}
        return
    loaded = LOADED_ADAPTER if LOADED_ADAPTER in loaded_adapters else ADAPTERS_OFF
    row_adapters = [adapter or loaded for adapter in adapters]
    gate = lora_gate(model, row_adapters)
    if gate is None:
        yield {"adapter_names": row_adapters}
        return
    with gate.rows(row_adapters):
        yield {}


def forward_rows(
    model: PreTrainedModel,
    adapters: Sequence[str | None],
    call: Callable[..., object] | None = None,
    **inputs: object,
) -> object:
    """``model(**inputs)`` (or ``call``: its compiled forward) under its lock, in inference mode, rows on adapters."""
    with model_lock(model), torch.inference_mode(), adapter_routing(model, adapters) as kwargs:
        return (call or model)(**inputs, use_cache=True, **kwargs)
