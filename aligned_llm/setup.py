"""The models and adapters an ``AlignedLLM`` holds, as a method sees them when it builds its rows.

The names are the contract between loading and the methods: which loaded model runs a row
(``POLICY``, ``REFERENCE``, ``REWARD``) and which peft adapter is active for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

POLICY = "policy"
"""The model being decoded (``from_pretrained``'s first argument)."""
REFERENCE = "reference"
"""A second model: AAD's SFT reference of a DPO policy."""
REWARD = "reward"
"""A separate reward model: PAD's PersRM."""

LOADED_ADAPTER = "default"
"""peft's name for the first adapter loaded on a model: the one active when a row asks for none."""
DPO_ADAPTER = LOADED_ADAPTER
"""The DPO side of an adapter pair: the adapter given to ``from_pretrained(adapter=...)``."""
REWARD_ADAPTER = "persrm"
"""The name under which a LoRA PersRM (``reward_model=`` a LoRA folder) is attached to the policy."""
ADAPTERS_OFF = "__base__"
"""peft's name for "every adapter off": the base weights under a LoRA."""


@dataclass(frozen=True)
class ModelSetup:
    """Which models are loaded and which adapters each carries."""

    models: frozenset[str] = frozenset({POLICY})
    adapters: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def has(self, model: str) -> bool:
        """Whether the model named ``model`` (``POLICY``, ``REFERENCE``, ``REWARD``) is loaded."""
        return model in self.models

    def has_adapter(self, adapter: str, model: str = POLICY) -> bool:
        """Whether ``model`` carries the peft adapter ``adapter``."""
        return adapter in self.adapters.get(model, frozenset())
