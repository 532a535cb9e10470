"""Run a sweep: every point of a grid decoded at once in the running batch, then scored.

Every point is one ``llm.submit(prompts, ...)``; the submissions join the same running batch,
so all points and prompts share each step's forwards (continuous batching) instead of
decoding point after point. Everything is checked before the first submission: the grid (each
value by its parameter's declaration), every point's full settings and prompts (as
``generate`` checks them), and the adherence scorer on a sample answer.
"""

from __future__ import annotations

import concurrent.futures
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aligned_llm.errors import AlignedLLMError, InvalidSettingError
from aligned_llm.generation import Generation
from aligned_llm.prompts import Prompt, normalize_prompts
from aligned_llm.result import GenerationResult
from aligned_llm.sweeps.fluency import answer_logprobs, perplexity, repetition
from aligned_llm.sweeps.grid import Grid, SweepPoint, grid_points
from aligned_llm.sweeps.records import SweepRecord, SweepResult, pareto_front, summarize
from aligned_llm.sweeps.scoring import Adherence, PrincipleGain, adherence_scorer, probe

if TYPE_CHECKING:
    from aligned_llm.llm import AlignedLLM

BASELINES = ("default", "direct", "vanilla")
"""Reference points a sweep can add: the method at its defaults, direct prompting, the prompt alone."""

Progress = Callable[[int, int], None]
"""``on_progress(points_decoded, points_total)``, called on the thread that waits for the sweep."""

_FIXED_NOT_SWEPT = frozenset({"method", "tools", "tool_choice", "response_format"})


class SweepScoringError(InvalidSettingError):
    """The adherence scorer failed on a decoded answer; names the point and prompt and keeps every answer.

    ``point`` is the point's label, ``prompt_index`` and ``prompt`` the prompt; ``records``
    holds every decoded answer (:class:`~aligned_llm.sweeps.records.SweepRecord`, adherence set
    for those scored before the failure), so nothing decoded is lost.
    """

    def __init__(self, point: str, prompt_index: int, prompt: Prompt, reason: str, records: list[SweepRecord]) -> None:
        self.point = point
        self.prompt_index = prompt_index
        self.prompt = prompt
        self.records = records
        super().__init__("adherence", f"{reason} at point {point!r}, prompt {prompt_index} ({prompt!r})")


class SweepRun:
    """A sweep in progress (from :func:`start_sweep`): :meth:`result` waits and scores, :meth:`stop` cancels.

    ``points`` are the settings being decoded; ``decoded`` counts the points whose answers
    have all arrived.
    """

    def __init__(
        self,
        llm: AlignedLLM,
        prompts: list[Prompt],
        points: list[SweepPoint],
        shared: dict[str, Any],
        adherence: Adherence,
        on_progress: Progress | None,
    ) -> None:
        self.llm = llm
        self.prompts = prompts
        self.points = points
        self.adherence = adherence
        self.decoded = 0
        self._shared = shared
        self._on_progress = on_progress
        self._stopped = threading.Event()
        self._seconds: dict[int, float] = {}
        self._started = time.perf_counter()
        self._generations: list[Generation] = []
        self._result: SweepResult | None = None
        self._lock = threading.Lock()

    def _submit(self) -> None:
        self._started = time.perf_counter()
        for point in self.points:
            self._generations.append(self.llm.submit(self.prompts, **point_settings(point, self._shared)))

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def stop(self) -> None:
        """Cancel every point still decoding at its next step; :meth:`result` then scores what was decoded."""
        self._stopped.set()
        for generation in self._generations:
            generation.cancel()

    def result(self) -> SweepResult:
        """Wait for every point, score the answers and mark the Pareto front (once; later calls return it)."""
        with self._lock:
            if self._result is None:
                self._result = self._finish()
            return self._result

    def _finish(self) -> SweepResult:
        index_of = {id(generation.future): i for i, generation in enumerate(self._generations)}
        try:
            for future in concurrent.futures.as_completed([g.future for g in self._generations]):
                self._seconds[index_of[id(future)]] = time.perf_counter() - self._started
                self.decoded += 1
                if self._on_progress is not None:
                    self._on_progress(self.decoded, len(self.points))
        except BaseException:  # interrupted: nothing goes on decoding for nobody
            self.stop()
            raise
        elapsed = max(self._seconds.values())
        records = [
            SweepRecord(point, index, self.prompts[index], result, self._seconds[point.index])
            for point, generation in zip(self.points, self._generations, strict=True)
            for index, result in enumerate(_as_list(generation.result()))
        ]
        self._score_adherence(records)
        self._score_fluency(records)
        summaries = [summarize(point, [r for r in records if r.point is point]) for point in self.points]
        flags = pareto_front([
            (s.adherence, s.perplexity) if s.complete else (math.nan, math.nan) for s in summaries
        ])  # fmt: skip
        for summary, flag in zip(summaries, flags, strict=True):
            summary.pareto = flag
            for record in summary.records:
                record.pareto = flag
        return SweepResult(records, summaries, self.adherence.name, elapsed, self.stopped, list(self.prompts))

    def _score_adherence(self, records: list[SweepRecord]) -> None:
        if self.adherence.is_model_proxy:
            guided = self._logprobs(records, guided=True)
            plain = self._logprobs(records, guided=False)
            for record, with_guidance, without in zip(records, guided, plain, strict=True):
                record.adherence = with_guidance - without if math.isfinite(with_guidance - without) else None
                record.logprob = without
            return
        for record in records:
            try:
                record.adherence = self.adherence.score(record.text, record.prompt)
            except Exception as error:
                reason = str(error) if isinstance(error, AlignedLLMError) else (
                    f"scorer {self.adherence.name} raised {type(error).__name__}: {error}"
                )  # fmt: skip
                point, index = record.point.label, record.prompt_index
                raise SweepScoringError(point, index, record.prompt, reason, records) from error

    def _score_fluency(self, records: list[SweepRecord]) -> None:
        if not self.adherence.is_model_proxy:
            for record, logprob in zip(records, self._logprobs(records, guided=False), strict=True):
                record.logprob = logprob
        for record in records:
            record.perplexity = perplexity(record.logprob)
            record.repetition = repetition(record.text)

    def _logprobs(self, records: list[SweepRecord], *, guided: bool) -> list[float]:
        """Each answer's mean log-probability per token under the plain model, with or without the guidance."""
        chat = self.llm.chat_format
        contexts: dict[int, list[int]] = {}
        for index, prompt in enumerate(self.prompts):
            conversation = normalize_prompts(prompt)[0][0]
            if guided:
                conversation = chat.with_guidance(
                    conversation, self._shared.get("principle"), self._shared.get("profile")
                )
            contexts[index] = chat.encode(conversation)
        return answer_logprobs(
            self.llm, [contexts[r.prompt_index] for r in records], [r.result.token_ids for r in records]
        )


def _as_list(results: GenerationResult | list[GenerationResult]) -> list[GenerationResult]:
    return results if isinstance(results, list) else [results]


def point_settings(point: SweepPoint, shared: Mapping[str, Any]) -> dict[str, Any]:
    """The full decoding settings of a point: the shared ones, its method and values; no guidance for vanilla."""
    settings = {**shared, **point.settings}
    if not point.guided:
        settings.pop("principle", None)
        settings.pop("profile", None)
    return settings


def _baseline_points(method: str, baselines: Iterable[str], first_index: int) -> list[SweepPoint]:
    points = []
    for name in baselines:
        if name not in BASELINES:
            raise InvalidSettingError("baselines", f"must be among {', '.join(BASELINES)}, got {name!r}")
        index = first_index + len(points)
        if name == "default":
            points.append(SweepPoint(index, method, {}, kind="default"))
        else:
            points.append(SweepPoint(index, "vanilla", {}, kind=name, guided=name == "direct"))
    return points


def _prompt_list(prompts: Prompt | Sequence[Prompt]) -> list[Prompt]:
    """The prompts as a list (one prompt alone becomes a list of one), each checked as ``generate`` checks it."""
    _, is_batch = normalize_prompts(prompts)
    return list(prompts) if is_batch else [prompts]  # type: ignore[list-item]


def start_sweep(
    llm: AlignedLLM,
    prompts: Prompt | Sequence[Prompt],
    grid: Grid,
    *,
    method: str,
    adherence: Callable[..., Any] | PrincipleGain | None = None,
    baselines: Iterable[str] = (),
    on_progress: Progress | None = None,
    **settings: Any,
) -> SweepRun:
    """Check everything, then submit every point to the running batch and return at once.

    See :func:`sweep` for the arguments. Nothing is submitted if anything is invalid.
    """
    prompt_list = _prompt_list(prompts)
    points = grid_points(method, grid)
    for name in settings:
        if name in grid:
            raise InvalidSettingError(name, "is given both in the grid and as a fixed setting; give it once")
        if name in _FIXED_NOT_SWEPT:
            raise InvalidSettingError(name, "cannot be set for a sweep (the sweep chooses it, or it is not free text)")
    points += _baseline_points(method, baselines, len(points))
    principle = settings.get("principle")
    guided = (isinstance(principle, str) and bool(principle.strip())) or settings.get("profile") is not None
    scorer = adherence_scorer(adherence, guided)
    for point in points:
        try:
            llm.check(prompt_list, **point_settings(point, settings))
        except InvalidSettingError as error:
            raise type(error)(error.parameter, f"{str(error).split(': ', 1)[-1]} (point {point.label!r})") from None
    probe(scorer, prompt_list[0])
    run = SweepRun(llm, prompt_list, points, dict(settings), scorer, on_progress)
    run._submit()
    return run


def sweep(
    llm: AlignedLLM,
    prompts: Prompt | Sequence[Prompt],
    grid: Grid,
    *,
    method: str,
    adherence: Callable[..., Any] | PrincipleGain | None = None,
    baselines: Iterable[str] = (),
    on_progress: Progress | None = None,
    progress: bool = False,
    **settings: Any,
) -> SweepResult:
    """Decode ``prompts`` at every point of ``grid`` (all at once, sharing forwards), score and compare them.

    ``grid`` maps parameters of ``method`` (or sampling/length settings) to the values to try,
    e.g. ``{"beta": [0.5, 1, 2]}``. ``adherence`` is a callable on the text, or on the text and
    the prompt, returning a number (a built-in checker from ``aligned_llm.sweeps.checkers``
    returns a bool); ``None`` uses the model-based :class:`PrincipleGain` proxy. ``baselines``
    adds reference points: ``"default"`` (the method at its defaults), ``"direct"`` (the
    guidance in context, decoded plainly), ``"vanilla"`` (the prompt alone). The other
    ``settings`` (``principle``, ``profile``, ``max_new_tokens``, …) are shared by every point.

    Every answer is scored on adherence and on fluency under the plain model (perplexity,
    mean log-probability, trigram repetition), with its tokens and time. Bad input (an empty
    grid, an out-of-range value, a bad setting, a scorer that raises or returns a non-number
    on a sample answer) raises ``InvalidSettingError`` before any decoding; a scorer failing
    on a decoded answer raises :class:`SweepScoringError`, which keeps the answers.
    ``progress=True`` shows a tqdm bar of the points decoded; ``on_progress(done, total)`` is
    called as points finish.
    """
    bars: list[Any] = []

    def report(done: int, total: int) -> None:
        if progress:
            if not bars:
                from tqdm.auto import tqdm

                bars.append(tqdm(total=total, desc="sweep", unit="point"))
            bars[0].update(done - bars[0].n)
        if on_progress is not None:
            on_progress(done, total)

    run = start_sweep(llm, prompts, grid, method=method, adherence=adherence, baselines=baselines,
                      on_progress=report, **settings)  # fmt: skip
    try:
        return run.result()
    finally:
        for bar in bars:
            bar.close()
