"""Per-row LoRA on/off in one forward, without splitting the batch.

AAD's pair (adapter on = DPO, off = SFT) and a LoRA PersRM are rows of one batch that differ
only by whether a LoRA adapter applies. peft's ``adapter_names`` routes them by splitting every
LoRA layer's batch into per-adapter sub-batches, which costs more than the second row saves. A
LoRA layer adds ``B(A(x)) · scaling`` to the base output, so the same result comes from running
the adapter on every row and multiplying its ``B`` output by a per-row 0/1 gate: rows with gate 0
get the base output plus exactly zero.

The gate applies only to plain LoRA on linear layers (no DoRA or other variants, no LoRA
embeddings, not merged) and to one adapter that is the model's active adapter; anything else
keeps peft's ``adapter_names`` routing, which gives the same tokens, more slowly.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from aligned_llm.setup import ADAPTERS_OFF

_GATES: weakref.WeakKeyDictionary[nn.Module, LoraGate | None] = weakref.WeakKeyDictionary()


class LoraGate:
    """Forward hooks on one adapter's ``lora_B`` modules that scale their output per row."""

    def __init__(self, adapter: str, lora_b_modules: Sequence[nn.Module]) -> None:
        self.adapter = adapter
        self.row_gate: torch.Tensor | None = None
        self._lock = threading.Lock()
        for module in lora_b_modules:
            module.register_forward_hook(self._scale)

    def _scale(self, _module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        gate = self.row_gate
        if gate is None:
            return output
        if gate.device != output.device or gate.dtype != output.dtype:
            gate = self.row_gate = gate.to(device=output.device, dtype=output.dtype)  # once per forward, not per layer
        return output * gate.view(-1, *[1] * (output.dim() - 1))

    @contextmanager
    def rows(self, row_adapters: Sequence[str]) -> Iterator[None]:
        """During the block, rows whose adapter is this one get it; all other rows get the base model.

        One block at a time per model: the gate is the model's state while a forward runs.
        """
        with self._lock:
            self.row_gate = torch.tensor([float(adapter == self.adapter) for adapter in row_adapters])
            try:
                yield
            finally:
                self.row_gate = None


def _build(model: nn.Module) -> LoraGate | None:
    try:
        from peft.tuners.lora import Linear as LoraLinear
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return None
    adapter = getattr(model, "active_adapter", None)
    configs = getattr(model, "peft_config", {})
    if not isinstance(adapter, str) or adapter not in configs or getattr(configs[adapter], "use_dora", False):
        return None
    lora_b_modules: list[nn.Module] = []
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        if not any(adapter in getattr(module, name, {}) for name in module.adapter_layer_names):
            continue
        plain = (
            isinstance(module, LoraLinear)
            and adapter in module.lora_B
            and adapter not in getattr(module, "lora_variant", {})
            and not module.merged
        )
        if not plain:
            return None
        lora_b_modules.append(module.lora_B[adapter])
    return LoraGate(adapter, lora_b_modules) if lora_b_modules else None


def lora_gate(model: nn.Module, row_adapters: Sequence[str]) -> LoraGate | None:
    """The gate for ``model`` if these rows can use it (one adapter, the active one, plain LoRA), else None.

    ``row_adapters`` names each row's adapter as peft would (``ADAPTERS_OFF`` for none). Hooks are
    installed once per model and do nothing outside :meth:`LoraGate.rows`.
    """
    if model not in _GATES:
        _GATES[model] = _build(model)
    gate = _GATES[model]
    if gate is None or getattr(model, "active_adapter", None) != gate.adapter:
        return None
    if not set(row_adapters) <= {gate.adapter, ADAPTERS_OFF}:
        return None
    return gate
