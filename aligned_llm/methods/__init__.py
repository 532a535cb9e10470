"""Decoding methods: small pure scoring rules over fp32 logits, looked up by name."""

from __future__ import annotations

from aligned_llm.methods.base import DecodingMethod, RowSpec, StepScores
from aligned_llm.methods.linear import LinearAlignment
from aligned_llm.methods.opad import OPAD
from aligned_llm.methods.vanilla import Vanilla

METHODS: dict[str, type[DecodingMethod]] = {cls.name: cls for cls in (Vanilla, OPAD, LinearAlignment)}

__all__ = ["METHODS", "OPAD", "DecodingMethod", "LinearAlignment", "RowSpec", "StepScores", "Vanilla"]
