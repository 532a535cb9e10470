"""``ModelSpec``: what to load, as plain picklable data, so that another process can load it.

A server replica or a Ray actor cannot receive a loaded model; it receives a spec and loads
its own copy. The spec is fixed by whoever starts the workers (the command line, a Python
caller), never by a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aligned_llm.llm import AlignedLLM


@dataclass(frozen=True)
class ModelSpec:
    """The arguments of :meth:`AlignedLLM.from_pretrained` (or :meth:`AlignedLLM.default` when ``model`` is None).

    ``adapter="bundled"`` with the default model adds the shipped DPO adapter.
    """

    model: str | None = None
    adapter: str | None = None
    reference: str | None = None
    reward_model: str | None = None
    device: str | None = None
    dtype: str | None = None

    def load(self) -> AlignedLLM:
        """Load the model this spec names."""
        from aligned_llm.llm import AlignedLLM

        options = {"device": self.device, "dtype": self.dtype}
        for name in ("adapter", "reference", "reward_model"):
            value = getattr(self, name)
            if value is not None:
                options[name] = value
        if self.model is None:
            return AlignedLLM.default(**options)
        return AlignedLLM.from_pretrained(self.model, **options)

    @property
    def display_name(self) -> str:
        """The model's name as users see it (the bundled model's name when none is given)."""
        from aligned_llm.loading import BUNDLED_NAME

        return self.model or BUNDLED_NAME
