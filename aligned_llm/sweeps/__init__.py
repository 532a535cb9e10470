"""Sweeps: decode prompts at every point of a grid over a method's parameters, score and compare them.

``sweep(llm, prompts, {"beta": [0.5, 1, 2]}, method="opad", principle=..., adherence=checker)``
decodes every point at once in the running batch and returns a :class:`SweepResult`: one
record per answer (adherence, perplexity and repetition under the plain model, tokens, time),
a summary per point, and the Pareto front of adherence against perplexity. ``checkers`` holds
built-in checkers for verifiable principles; ``docs/tuning.md`` is the guide.
"""

from __future__ import annotations

from aligned_llm.sweeps import checkers
from aligned_llm.sweeps.checkers import Checker
from aligned_llm.sweeps.grid import SweepPoint, grid_points, sweepable_parameters
from aligned_llm.sweeps.records import PointSummary, SweepRecord, SweepResult, pareto_front
from aligned_llm.sweeps.runner import BASELINES, SweepRun, SweepScoringError, start_sweep, sweep
from aligned_llm.sweeps.scoring import PrincipleGain

__all__ = [
    "BASELINES",
    "Checker",
    "PointSummary",
    "PrincipleGain",
    "SweepPoint",
    "SweepRecord",
    "SweepResult",
    "SweepRun",
    "SweepScoringError",
    "checkers",
    "grid_points",
    "pareto_front",
    "start_sweep",
    "sweep",
    "sweepable_parameters",
]
