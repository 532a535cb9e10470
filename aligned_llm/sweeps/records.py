"""What a sweep returns: one record per point and prompt, a summary per point, and the Pareto front."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aligned_llm.errors import MissingPackageError
from aligned_llm.prompts import Prompt
from aligned_llm.result import GenerationResult
from aligned_llm.sweeps.grid import SweepPoint

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure


@dataclass
class SweepRecord:
    """One answer of a sweep: its point and prompt, the text, and its scores.

    ``adherence`` is the scorer's number (``None`` until scored); ``logprob`` the answer's mean
    log-probability per token under the plain model, ``perplexity`` its ``exp(−logprob)``;
    ``repetition`` the share of repeated word trigrams; ``seconds`` the time from the sweep's
    start until this point's answers were all decoded (points decode together, sharing forwards).
    """

    point: SweepPoint
    prompt_index: int
    prompt: Prompt
    result: GenerationResult
    seconds: float
    adherence: float | None = None
    logprob: float = math.nan
    perplexity: float = math.nan
    repetition: float = math.nan
    pareto: bool = False

    @property
    def text(self) -> str:
        return self.result.text

    def as_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict: the point's label, kind, method and values flattened, then the scores."""
        return {
            "point": self.point.index,
            "label": self.point.label,
            "kind": self.point.kind,
            "method": self.point.method,
            **self.point.values,
            "prompt_index": self.prompt_index,
            "prompt": self.prompt,
            "text": self.result.text,
            "adherence": self.adherence,
            "perplexity": _finite_or_none(self.perplexity),
            "logprob": _finite_or_none(self.logprob),
            "repetition": _finite_or_none(self.repetition),
            "output_tokens": self.result.output_tokens,
            "finish_reason": self.result.finish_reason,
            "seconds": round(self.seconds, 4),
            "pareto": self.pareto,
        }


@dataclass
class PointSummary:
    """One point over all prompts: mean adherence, perplexity over all its answer tokens, mean repetition.

    ``perplexity`` is ``exp`` of the token-weighted mean negative log-probability of the point's
    answers under the plain model. ``complete`` is False when an answer was cancelled (Stop);
    only complete points can be on the Pareto front.
    """

    point: SweepPoint
    records: list[SweepRecord]
    adherence: float = math.nan
    perplexity: float = math.nan
    repetition: float = math.nan
    mean_tokens: float = math.nan
    seconds: float = math.nan
    pareto: bool = False

    @property
    def label(self) -> str:
        return self.point.label

    @property
    def complete(self) -> bool:
        return all(record.result.finish_reason != "cancelled" for record in self.records)

    def as_dict(self) -> dict[str, Any]:
        """A plain dict of the point and its summary scores."""
        return {
            "point": self.point.index,
            "label": self.point.label,
            "kind": self.point.kind,
            "method": self.point.method,
            **self.point.values,
            "adherence": _finite_or_none(self.adherence),
            "perplexity": _finite_or_none(self.perplexity),
            "repetition": _finite_or_none(self.repetition),
            "mean_tokens": _finite_or_none(self.mean_tokens),
            "seconds": round(self.seconds, 4),
            "complete": self.complete,
            "pareto": self.pareto,
        }


def summarize(point: SweepPoint, records: list[SweepRecord]) -> PointSummary:
    """The summary of one point's scored records."""
    summary = PointSummary(point, records)
    scored = [record.adherence for record in records if record.adherence is not None]
    summary.adherence = sum(scored) / len(scored) if scored else math.nan
    weighted = [(record.logprob, record.result.output_tokens) for record in records if math.isfinite(record.logprob)]
    tokens = sum(count for _, count in weighted)
    if tokens:
        summary.perplexity = math.exp(-sum(logprob * count for logprob, count in weighted) / tokens)
    repetitions = [record.repetition for record in records if math.isfinite(record.repetition)]
    summary.repetition = sum(repetitions) / len(repetitions) if repetitions else math.nan
    summary.mean_tokens = sum(record.result.output_tokens for record in records) / len(records)
    summary.seconds = max(record.seconds for record in records)
    return summary


def pareto_front(objectives: Sequence[tuple[float, float]]) -> list[bool]:
    """Which ``(adherence, perplexity)`` pairs no other pair dominates (higher adherence, lower perplexity).

    A pair is dominated when another is at least as good on both and strictly better on one;
    equal pairs are all on the front. Pairs with a NaN are never on it.
    """
    flags = []
    for i, (adherence, perplexity) in enumerate(objectives):
        if math.isnan(adherence) or math.isnan(perplexity):
            flags.append(False)
            continue
        dominated = any(
            j != i
            and not (math.isnan(other_adherence) or math.isnan(other_perplexity))
            and other_adherence >= adherence
            and other_perplexity <= perplexity
            and (other_adherence > adherence or other_perplexity < perplexity)
            for j, (other_adherence, other_perplexity) in enumerate(objectives)
        )
        flags.append(not dominated)
    return flags


@dataclass
class SweepResult:
    """A finished (or stopped) sweep: ``records`` per answer, ``points`` per setting, the front marked.

    ``adherence_name`` names the scorer; ``seconds`` is the wall time of decoding every point
    together; ``stopped`` says Stop was pressed (cancelled points are kept, off the front).
    """

    records: list[SweepRecord]
    points: list[PointSummary]
    adherence_name: str
    seconds: float
    stopped: bool = False
    prompts: list[Prompt] = field(default_factory=list)

    @property
    def front(self) -> list[PointSummary]:
        """The Pareto-optimal points, from the most fluent (lowest perplexity) to the most adherent."""
        return sorted((point for point in self.points if point.pareto), key=lambda point: point.perplexity)

    def best(self, *, max_perplexity: float | None = None, kinds: Sequence[str] = ("grid", "default")) -> PointSummary:
        """The point with the highest adherence (ties: the lowest perplexity) among complete points of ``kinds``.

        ``max_perplexity`` leaves out points less fluent than that; baselines (``"direct"``,
        ``"vanilla"``) are not candidates unless named in ``kinds``.
        """
        candidates = [
            point for point in self.points
            if point.point.kind in kinds and point.complete and not math.isnan(point.adherence)
            and (max_perplexity is None or point.perplexity <= max_perplexity)
        ]  # fmt: skip
        if not candidates:
            raise ValueError("no complete, scored point meets the conditions")
        return max(candidates, key=lambda point: (point.adherence, -_or_inf(point.perplexity)))

    def point(self, label_or_index: str | int) -> PointSummary:
        """A point by its label (``"opad β=0.5"``) or index."""
        for summary in self.points:
            if label_or_index in (summary.point.index, summary.point.label):
                return summary
        raise KeyError(f"no point {label_or_index!r}; the points are {[p.label for p in self.points]}")

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per answer (see :meth:`SweepRecord.as_dict`)."""
        return [record.as_dict() for record in self.records]

    def to_dataframe(self, per: str = "answer") -> pandas.DataFrame:
        """The records as a pandas DataFrame, one row per answer (``per="answer"``) or per point (``"point"``)."""
        try:
            import pandas
        except ImportError as error:
            raise MissingPackageError("to_dataframe needs pandas: pip install pandas") from error
        if per not in ("answer", "point"):
            raise ValueError(f"per must be 'answer' or 'point', got {per!r}")
        rows = self.to_records() if per == "answer" else [point.as_dict() for point in self.points]
        return pandas.DataFrame(rows)

    def write_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Write one JSON line per answer; return how many."""
        records = self.to_records()
        with Path(path).open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return len(records)

    def figure(self, *, title: str | None = None) -> Figure:
        """Adherence against perplexity, one marker per point, the Pareto front drawn (``sweeps.plot``)."""
        from aligned_llm.sweeps.plot import sweep_figure

        return sweep_figure(self, title=title)

    def table(self) -> str:
        """A plain-text table of the points, best adherence first."""
        rows = sorted(self.points, key=lambda p: (-_or_minus_inf(p.adherence), _or_inf(p.perplexity)))
        width = max(len(point.label) for point in self.points)
        lines = [f"{'point':<{width}}  adherence  perplexity  repetition  tokens  front"]
        for point in rows:
            lines.append(
                f"{point.label:<{width}}  {point.adherence:9.3f}  {point.perplexity:10.2f}  {point.repetition:10.3f}  "
                f"{point.mean_tokens:6.1f}  {'*' if point.pareto else ''}"
            )
        return "\n".join(lines)


def _finite_or_none(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def _or_inf(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _or_minus_inf(value: float) -> float:
    return -math.inf if math.isnan(value) else value
