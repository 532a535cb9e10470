"""The engine wing: requests → rows on KV lanes → method → score processors → choice → stopping criteria.

- ``requests``: what is decoded (requests, their progress, groups, step events);
- ``kv``: prefill, the KV stores (``padded`` and ``static``) and one forward over some rows;
- ``batch``: the running batch and the cohorts prefilled before they join it;
- ``processors`` and ``stopping``: what happens after the method, and what ends a request;
- ``engine``: the models and each step's decisions.

The scheduler (``aligned_llm.scheduler``) plans which requests join, prefill and leave; the
engine executes.
"""

from __future__ import annotations

from aligned_llm.engine.engine import Engine
from aligned_llm.engine.kv import KV_STORES, PREFILL_CHUNK, adapter_routing, model_lock
from aligned_llm.engine.processors import ScoreProcessor, StepContext
from aligned_llm.engine.requests import EngineRequest, Progress, Sampling, StepEvent
from aligned_llm.engine.stopping import StoppingCriterion

__all__ = [
    "KV_STORES",
    "PREFILL_CHUNK",
    "Engine",
    "EngineRequest",
    "Progress",
    "Sampling",
    "ScoreProcessor",
    "StepContext",
    "StepEvent",
    "StoppingCriterion",
    "adapter_routing",
    "model_lock",
]
