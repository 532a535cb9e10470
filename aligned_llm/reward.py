"""PersRM loading for PAD: a causal LM whose logits come from ``lm_head(v_head(h))``.

The authors' PersRM stores ``v_head = Linear(hidden, hidden)`` (identity-initialised) as
``value_head.safetensors`` or ``value_head.bin`` beside the model, applied to the final hidden
state before ``lm_head``. A PersRM can also be a LoRA adapter on the base model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel

from aligned_llm.errors import ModelLoadError
from aligned_llm.loading import UNREADABLE_WEIGHTS, check_safetensors, describe_unreadable

VALUE_HEAD_FILES = ("value_head.safetensors", "value_head.bin")
_KEY_PREFIXES = ("v_head.summary.", "v_head.", "summary.", "")


def find_value_head(folder: Path) -> Path | None:
    """The value-head file in ``folder``, if there is one."""
    for name in VALUE_HEAD_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors in a value-head file; :class:`ModelLoadError` naming it when it is unreadable."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        check_safetensors(path)
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE_WEIGHTS as error:
        raise ModelLoadError(path, describe_unreadable(error, "a value head")) from error
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ModelLoadError(path, f"must hold a dict of tensors, it holds a {type(state).__name__}")
    return state


def attach_value_head(model: PreTrainedModel, path: Path) -> PreTrainedModel:
    """Load ``path`` as ``model.v_head`` and apply it to the input of the output layer."""
    state = _read_state(path)
    hidden = model.config.hidden_size
    for prefix in _KEY_PREFIXES:
        if f"{prefix}weight" in state:
            weight, bias = state[f"{prefix}weight"], state.get(f"{prefix}bias")
            break
    else:
        raise ModelLoadError(path, f"has no value-head weight (keys: {sorted(state)})")
    if tuple(weight.shape) != (hidden, hidden):
        raise ModelLoadError(
            path, f"the value head must be Linear({hidden}, {hidden}) for this model, got weight {tuple(weight.shape)}"
        )
    head = torch.nn.Linear(hidden, hidden, bias=bias is not None)
    with torch.no_grad():
        head.weight.copy_(weight)
        if bias is not None:
            head.bias.copy_(bias)
    model.v_head = head.to(device=model.device, dtype=model.dtype)
    model.get_output_embeddings().register_forward_pre_hook(lambda _module, args: (model.v_head(args[0]), *args[1:]))
    return model
