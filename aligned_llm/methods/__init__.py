"""Decoding methods: small pure scoring rules over fp32 logits, looked up by name."""

from __future__ import annotations

from aligned_llm.methods.aad import AAD
from aligned_llm.methods.base import DecodingMethod, RowSpec, StepScores
from aligned_llm.methods.linear import LinearAlignment
from aligned_llm.methods.opad import OPAD
from aligned_llm.methods.pad import PAD
from aligned_llm.methods.vanilla import Vanilla

METHODS: dict[str, type[DecodingMethod]] = {cls.name: cls for cls in (Vanilla, OPAD, LinearAlignment, PAD, AAD)}

__all__ = ["AAD", "METHODS", "OPAD", "PAD", "DecodingMethod", "LinearAlignment", "RowSpec", "StepScores", "Vanilla"]
