"""The built-in checkers on hand-made texts with known answers; the Pareto front against a hand-computed one."""

from __future__ import annotations

import math

import pytest

from aligned_llm.sweeps import checkers, pareto_front
from aligned_llm.sweeps.checkers import checker_from_spec, detect_language


@pytest.mark.parametrize(
    ("checker", "text", "expected"),
    [
        (checkers.max_words(5), "The moon is bright tonight.", True),
        (checkers.max_words(5), "The moon is very bright tonight.", False),
        (checkers.max_words(3), "It's well-known: yes.", True),  # apostrophes and hyphens join a word
        (checkers.max_words(5), "  ", False),
        (checkers.min_words(4), "one two three", False),
        (checkers.min_words(3), "one two three", True),
        (checkers.lowercase(), "the moon is bright, 384,400 km away.", True),
        (checkers.lowercase(), "The moon is bright.", False),
        (checkers.lowercase(), "42!", False),  # no letters: not lowercase writing
        (checkers.uppercase(), "THE MOON IS BRIGHT.", True),
        (checkers.uppercase(), "THE MOON is BRIGHT.", False),
        (checkers.no_commas(), "No commas here.", True),
        (checkers.no_commas(), "One, two.", False),
        (checkers.no_commas(), "全角，逗号", False),
        (checkers.no_commas(), "", False),
        (checkers.ends_with("Anything else?"), "Done. anything else?  \n", True),
        (checkers.ends_with("Anything else?"), "Anything else? Done.", False),
        (checkers.starts_with("Yes"), "**Yes**, the moon is round.", True),
        (checkers.starts_with("Yes"), '"yes" is the answer.', True),
        (checkers.starts_with("Yes"), "Yesterday it rained.", False),
        (checkers.starts_with("Yes"), "I think yes.", False),
        (checkers.bullet_list(3), "Rivers:\n- Nile\n- Amazon\n* Danube\n", True),
        (checkers.bullet_list(3), "1. Nile\n2) Amazon\n3. Danube\n4. Rhine", False),
        (checkers.bullet_list(3), "-Nile\n-Amazon\n-Danube", False),  # no space after the mark: not a list line
        (checkers.bullet_list(), "1. Nile\n2. Amazon", True),
        (checkers.bullet_list(at_least=2), "Just a sentence - with a dash.", False),
        (checkers.in_language("fr"), "La lune est un satellite de la Terre et elle est très belle.", True),
        (checkers.in_language("en"), "La lune est un satellite de la Terre et elle est très belle.", False),
        (checkers.in_language("en"), "The moon is a satellite of the Earth and it is bright.", True),
        (checkers.in_language("de"), "Der Mond ist nicht weit von der Erde entfernt und er ist hell.", True),
        (checkers.in_language("es"), "La luna es el satélite de la Tierra y es muy brillante.", True),
    ],
)  # fmt: skip
def test_checkers_on_known_texts(checker, text, expected):
    assert checker(text) is expected, f"{checker.name}: {text!r}"


def test_language_is_unsure_on_short_or_ambiguous_text():
    assert detect_language("Nile") is None
    assert detect_language("Paris, Berlin, Madrid") is None
    assert detect_language("the moon") is None  # one hit is not enough
    assert detect_language("the cat and the dog") == "en"


@pytest.mark.parametrize(
    ("spec", "text", "expected"),
    [("max-words:3", "one two three", True), ("max-words:2", "one two three", False), ("lowercase", "abc", True),
     ("starts-with:Sure", "Sure thing.", True), ("bullets:2", "- a\n- b", True), ("bullets", "- a\n- b\n- c", True),
     ("language:fr", "Le chat est dans la maison.", True), ("no-commas", "a, b", False)],
)  # fmt: skip
def test_checkers_by_name(spec, text, expected):
    assert checker_from_spec(spec)(text) is expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [("shouting", "unknown checker 'shouting'"), ("max-words", "needs an argument"),
     ("max-words:ten", "whole number"), ("lowercase:yes", "takes no argument"), ("language:xx", "in_language knows")],
)  # fmt: skip
def test_bad_checker_names_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        checker_from_spec(spec)


def test_pareto_front_against_a_hand_computed_one():
    # (adherence ↑, perplexity ↓)
    points = [
        (0.2, 2.0),   # 0: most fluent → front
        (0.5, 3.0),   # 1: front
        (0.4, 3.5),   # 2: dominated by 1
        (0.9, 8.0),   # 3: most adherent → front
        (0.5, 3.0),   # 4: equal to 1 → front too
        (0.1, 2.5),   # 5: dominated by 0
        (0.9, 9.0),   # 6: dominated by 3 (same adherence, worse perplexity)
        (math.nan, 1.0),  # 7: unscored → never on the front
        (0.95, math.nan),  # 8: unscored
    ]  # fmt: skip
    assert pareto_front(points) == [True, True, False, True, True, False, False, False, False]
    assert pareto_front([]) == []
    assert pareto_front([(0.0, 5.0)]) == [True]
