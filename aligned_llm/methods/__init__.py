"""Decoding methods: small pure scoring rules over fp32 logits, each registered by name.

Importing this package registers the built-in methods (in this order) with
``aligned_llm.registry.register_method``, exactly as a user's method is registered.
"""

from __future__ import annotations

from aligned_llm.methods.base import DecodingMethod, RowSpec, StepScores

from aligned_llm.methods.vanilla import Vanilla  # isort: skip
from aligned_llm.methods.opad import OPAD  # isort: skip
from aligned_llm.methods.linear import LinearAlignment  # isort: skip
from aligned_llm.methods.pad import PAD  # isort: skip
from aligned_llm.methods.aad import AAD  # isort: skip

__all__ = ["AAD", "OPAD", "PAD", "DecodingMethod", "LinearAlignment", "RowSpec", "StepScores", "Vanilla"]
