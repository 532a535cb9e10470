"""The sweep on a tiny model: every point decodes as generate would, together; scores; bad input refused first."""

from __future__ import annotations

import json
import math
import threading

import matplotlib
import pytest
import torch

from aligned_llm import InvalidSettingError, PrincipleGain, SweepResult, SweepScoringError, start_sweep, sweep
from aligned_llm.sweeps import checkers
from aligned_llm.sweeps.fluency import answer_logprobs, repetition

matplotlib.use("Agg")

PROMPTS = ["Tell me about the moon.", "Name three rivers."]
PRINCIPLE = "Answer in lowercase only."


class SubmitSpy:
    """Records ``llm.submit`` calls, and whether a submission had finished before a later one was made."""

    def __init__(self, llm, monkeypatch):
        self.calls: list[dict] = []
        self.generations: list = []
        self.finished_before_a_submit = False
        self._real = llm.submit
        monkeypatch.setattr(llm, "submit", self)

    def __call__(self, prompts, **settings):
        self.finished_before_a_submit |= any(generation.done() for generation in self.generations)
        self.calls.append(settings)
        self.generations.append(self._real(prompts, **settings))
        return self.generations[-1]


def test_every_point_decodes_as_generate_does_and_is_scored(tiny_llm, monkeypatch):
    spy = SubmitSpy(tiny_llm, monkeypatch)
    result = sweep(tiny_llm, PROMPTS, {"beta": [0.5, 2.0]}, method="opad", principle=PRINCIPLE,
                   adherence=lambda text: len(text), baselines=("default", "direct", "vanilla"),
                   max_new_tokens=8)  # fmt: skip
    assert isinstance(result, SweepResult)
    assert [p.label for p in result.points] == ["opad β=0.5", "opad β=2", "opad (defaults)", "direct prompting",
                                                "vanilla"]  # fmt: skip
    assert [call["method"] for call in spy.calls] == ["opad", "opad", "opad", "vanilla", "vanilla"]
    assert "principle" not in spy.calls[-1] and spy.calls[-2]["principle"] == PRINCIPLE
    expected_settings = [
        {"method": "opad", "beta": 0.5, "principle": PRINCIPLE},
        {"method": "opad", "beta": 2.0, "principle": PRINCIPLE},
        {"method": "opad", "principle": PRINCIPLE},
        {"method": "vanilla", "principle": PRINCIPLE},
        {"method": "vanilla"},
    ]
    assert len(result.records) == 5 * len(PROMPTS)
    for summary, settings in zip(result.points, expected_settings, strict=True):
        alone = tiny_llm.generate(PROMPTS, max_new_tokens=8, **settings)
        assert [r.result.token_ids for r in summary.records] == [a.token_ids for a in alone], summary.label
        assert [r.adherence for r in summary.records] == [float(len(a.text)) for a in alone]
        assert summary.adherence == pytest.approx(sum(len(a.text) for a in alone) / len(alone))
        for record in summary.records:
            assert record.perplexity == pytest.approx(math.exp(-record.logprob))
            assert record.repetition == repetition(record.text)
            assert 0 < record.seconds <= result.seconds
    tokens = sum(r.result.output_tokens for r in result.points[0].records)
    mean_nll = -sum(r.logprob * r.result.output_tokens for r in result.points[0].records) / tokens
    assert result.points[0].perplexity == pytest.approx(math.exp(mean_nll))


def test_points_share_the_running_batch(tiny_llm, monkeypatch):
    """All points are submitted before any finishes, so they decode in the same forwards."""
    spy = SubmitSpy(tiny_llm, monkeypatch)
    sweep(tiny_llm, PROMPTS, {"beta": [0.5, 1.0, 2.0], "opad_window": ["reference", 1]}, method="opad",
          principle=PRINCIPLE, adherence=checkers.lowercase(), max_new_tokens=120)  # fmt: skip
    assert len(spy.calls) == 6
    assert not spy.finished_before_a_submit, "a point finished before the others were submitted"


def test_the_logprob_is_the_plain_models_teacher_forced_likelihood(tiny_llm):
    context = tiny_llm.chat_format.encode([{"role": "user", "content": "Hi"}])
    answer = tiny_llm.generate("Hi", max_new_tokens=6).token_ids
    ids = torch.tensor([list(context) + list(answer)])
    with torch.inference_mode():
        logits = tiny_llm.model(input_ids=ids).logits[0].float()
    expected = torch.log_softmax(logits, -1)[len(context) - 1 : -1].gather(-1, torch.tensor(answer)[:, None]).mean()
    longer = tiny_llm.chat_format.encode([{"role": "user", "content": "A longer prompt pads the batch."}])
    got = answer_logprobs(tiny_llm, [context, longer, context], [answer, answer[:3], ()])
    assert got[0] == pytest.approx(float(expected), abs=1e-5)
    assert math.isfinite(got[1]) and math.isnan(got[2])
    assert got[0] < 0


def test_the_principle_gain_proxy_is_the_guided_minus_plain_logprob(tiny_llm):
    result = sweep(tiny_llm, PROMPTS[:1], {"beta": [1.0]}, method="opad", principle=PRINCIPLE, max_new_tokens=6)
    record = result.records[0]
    assert result.adherence_name == PrincipleGain().name
    chat = tiny_llm.chat_format
    plain = chat.encode([{"role": "user", "content": PROMPTS[0]}])
    guided = chat.encode(chat.with_principle([{"role": "user", "content": PROMPTS[0]}], PRINCIPLE))
    with_principle, without = answer_logprobs(tiny_llm, [guided, plain], [record.result.token_ids] * 2)
    assert record.adherence == pytest.approx(with_principle - without)
    assert record.logprob == pytest.approx(without)


def test_records_dataframe_jsonl_table_and_plot(tiny_llm, tmp_path):
    result = sweep(tiny_llm, PROMPTS, {"beta": [0.5, 2.0]}, method="opad", principle=PRINCIPLE,
                   adherence=checkers.max_words(3), baselines=("direct",), max_new_tokens=6)  # fmt: skip
    rows = result.to_records()
    assert len(rows) == 6 and rows[0]["beta"] == 0.5 and rows[0]["label"] == "opad β=0.5"
    assert {"adherence", "perplexity", "logprob", "repetition", "output_tokens", "seconds", "pareto"} <= set(rows[0])
    assert "beta" not in rows[-1] and rows[-1]["kind"] == "direct"
    frame = result.to_dataframe()
    assert list(frame["adherence"]) == [row["adherence"] for row in rows]
    points = result.to_dataframe(per="point")
    assert list(points["pareto"]) == [p.pareto for p in result.points]
    assert result.write_jsonl(tmp_path / "s.jsonl") == 6
    written = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert written == json.loads(json.dumps(rows))
    assert any(p.pareto for p in result.points) and all(p in result.points for p in result.front)
    assert "opad β=0.5" in result.table()
    figure = result.figure()
    axes = figure.axes[0]
    assert "perplexity" in axes.get_xlabel() and "at most 3 words" in axes.get_ylabel()
    assert [text.get_text() for text in axes.texts] == [p.label for p in result.points]
    assert any(line.get_label() == "Pareto front" for line in axes.lines)


def test_best_prefers_adherence_then_fluency():
    from aligned_llm.sweeps.grid import SweepPoint
    from aligned_llm.sweeps.records import PointSummary

    def summary(index, adherence, perplexity, kind="grid"):
        return PointSummary(SweepPoint(index, "opad", {"beta": float(index)}, kind=kind), [], adherence, perplexity)

    points = [summary(0, 0.5, 3.0), summary(1, 0.8, 9.0), summary(2, 0.8, 4.0), summary(3, 1.0, 2.0, "direct")]
    result = SweepResult([], points, "x", 1.0)
    assert result.best().point.index == 2
    assert result.best(max_perplexity=3.5).point.index == 0
    assert result.best(kinds=("grid", "direct")).point.index == 3
    assert result.point("opad β=2").adherence == 0.8
    with pytest.raises(ValueError, match="no complete"):
        result.best(max_perplexity=1.0)


class NeverSubmit:
    def __call__(self, *args, **kwargs):
        raise AssertionError("nothing may be decoded on bad input")


@pytest.mark.parametrize(
    ("grid", "settings", "parameter", "message"),
    [({}, {}, "grid", "is empty"),
     ({"beta": []}, {}, "beta", "no values"),
     ({"beta": [1.0, -1.0]}, {}, "beta", "grid value -1.0 is refused: must be a finite number >= 1e-30"),
     ({"beta": [1.0, 1]}, {}, "beta", "given twice"),
     ({"beta": 0.5}, {}, "beta", "list of values"),
     ({"rho": [1.0]}, {}, "rho", "not a parameter of method 'opad'"),
     ({"opad_window": ["sometimes"]}, {}, "opad_window", "refused"),
     ({"max_new_tokens": [0]}, {}, "max_new_tokens", "refused"),
     ({"beta": [1.0]}, {"beta": 2.0}, "beta", "both in the grid"),
     ({"beta": [1.0]}, {"principle": " "}, "principle", "point 'opad β=1'"),
     ({"beta": [1.0]}, {"temperature": -1}, "temperature", "point"),
     ({"beta": [1.0]}, {"baselines": ("oracle",)}, "baselines", "oracle"),
     ({"beta": [1.0]}, {"principle": 5}, "principle", "string")],
    ids=["empty-grid", "empty-values", "out-of-range", "duplicate", "not-a-list", "other-method", "bad-choice",
         "zero-tokens", "twice", "blank-principle", "bad-temperature", "bad-baseline", "principle-not-text"],
)  # fmt: skip
def test_bad_input_is_refused_before_any_decoding(tiny_llm, monkeypatch, grid, settings, parameter, message):
    monkeypatch.setattr(tiny_llm, "submit", NeverSubmit())
    options = {"principle": PRINCIPLE, "adherence": checkers.lowercase(), **settings}
    with pytest.raises(InvalidSettingError, match=message) as raised:
        sweep(tiny_llm, PROMPTS, grid, method="opad", max_new_tokens=4, **options)
    assert raised.value.parameter == parameter


def _raises(text):
    raise KeyError("score")


@pytest.mark.parametrize(
    ("scorer", "message"),
    [(_raises, "scorer '_raises' raised KeyError: 'score' on a sample answer"),
     (lambda text: "yes", "must return a finite number"),
     (lambda text: math.nan, "must return a finite number"),
     (lambda text: None, "got None"),
     (lambda: 1.0, "takes no argument"),
     ("lowercase", "must be a callable")],
    ids=["raises", "string", "nan", "none", "no-argument", "not-callable"],
)  # fmt: skip
def test_a_bad_scorer_is_refused_before_any_decoding(tiny_llm, monkeypatch, scorer, message):
    monkeypatch.setattr(tiny_llm, "submit", NeverSubmit())
    with pytest.raises(InvalidSettingError, match=message) as raised:
        sweep(tiny_llm, PROMPTS, {"beta": [1.0]}, method="opad", principle=PRINCIPLE, adherence=scorer,
              max_new_tokens=4)  # fmt: skip
    assert raised.value.parameter == "adherence"


def test_the_proxy_needs_guidance(tiny_llm):
    with pytest.raises(InvalidSettingError, match="needs a principle or profile"):
        sweep(tiny_llm, PROMPTS, {"temperature": [0.0]}, method="vanilla", max_new_tokens=4)


def test_a_scorer_failing_on_an_answer_names_the_point_and_prompt_and_keeps_the_answers(tiny_llm):
    answers = {}

    def picky(text, prompt):
        if prompt == PROMPTS[1] and len(answers) >= 2:
            raise RuntimeError("cannot read this one")
        answers[(text, prompt)] = True
        return 1.0

    with pytest.raises(SweepScoringError) as raised:
        sweep(tiny_llm, PROMPTS, {"beta": [0.5, 2.0]}, method="opad", principle=PRINCIPLE, adherence=picky,
              max_new_tokens=5)  # fmt: skip
    error = raised.value
    assert error.parameter == "adherence" and error.point == "opad β=0.5" and error.prompt_index == 1
    assert error.prompt == PROMPTS[1]
    assert "RuntimeError: cannot read this one" in str(error) and "'opad β=0.5', prompt 1" in str(error)
    assert len(error.records) == 4 and all(record.result.output_tokens > 0 for record in error.records)
    assert [record.adherence for record in error.records] == [1.0, None, None, None]


def test_the_scorer_may_read_the_prompt(tiny_llm):
    result = sweep(tiny_llm, PROMPTS, {"beta": [1.0]}, method="opad", principle=PRINCIPLE,
                   adherence=lambda text, prompt: float(prompt == PROMPTS[1]), max_new_tokens=3)  # fmt: skip
    assert [record.adherence for record in result.records] == [0.0, 1.0]


def test_stop_cancels_the_points_and_keeps_them_off_the_front(tiny_llm):
    started = threading.Event()
    run = start_sweep(tiny_llm, PROMPTS, {"beta": [0.5, 1.0, 2.0]}, method="opad", principle=PRINCIPLE,
                      adherence=checkers.lowercase(), max_new_tokens=200,
                      on_progress=lambda done, total: started.set())  # fmt: skip
    run.stop()
    result = run.result()
    assert result.stopped and run.stopped
    assert all(record.result.finish_reason == "cancelled" for record in result.records)
    assert all(record.result.output_tokens < 200 for record in result.records)
    assert not any(point.pareto for point in result.points) and result.front == []
    assert started.is_set(), "progress is reported for cancelled points too"
    assert run.result() is result


@pytest.mark.parametrize(
    ("method", "grid", "settings"),
    [("linear", {"rho": [1.0, 3.0], "mask_top_p": [0.5, 0.8]}, {"principle": PRINCIPLE}),
     ("pad", {"k": [2, 5], "pad_base": ["profiled", "plain"]}, {"profile": "A sailor."}),
     ("vanilla", {"temperature": [0.0, 0.7], "seed": [1]}, {"principle": PRINCIPLE})],
    ids=["linear-rho-top-p", "pad-k-base", "sampling"],
)  # fmt: skip
def test_any_registered_parameter_can_be_swept(tiny_llm, method, grid, settings):
    result = sweep(tiny_llm, PROMPTS[:1], grid, method=method, adherence=checkers.min_words(1), max_new_tokens=5,
                   **settings)  # fmt: skip
    assert len(result.points) == len(grid[next(iter(grid))]) * len(grid[list(grid)[-1]])
    for summary in result.points:
        alone = tiny_llm.generate(PROMPTS[0], method=method, max_new_tokens=5, **settings, **summary.point.values)
        assert summary.records[0].result.token_ids == alone.token_ids, summary.label


def test_progress_reports_every_point(tiny_llm, capsys):
    seen = []
    sweep(tiny_llm, PROMPTS[:1], {"beta": [0.5, 1.0, 2.0]}, method="opad", principle=PRINCIPLE,
          adherence=checkers.lowercase(), max_new_tokens=3, progress=True,
          on_progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert seen == [(1, 3), (2, 3), (3, 3)]
    err = capsys.readouterr().err
    assert "sweep: 100%" in err and "3/3" in err
