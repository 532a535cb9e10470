"""frequency_penalty and presence_penalty equal OpenAI's formula, re-computed naively step by step."""

from __future__ import annotations

from collections import Counter

import jsonschema
import pytest
import torch

from aligned_llm import DecodeSettings, InvalidSettingError
from aligned_llm.prompts import normalize_prompts
from tests.reference import full_logits

PROMPTS = ["Tell me about the moon.", "Write a short poem about autumn leaves falling in the quiet park."]
STEPS = 16


def _ids(llm, prompt) -> list[int]:
    conversation = normalize_prompts(prompt)[0][0]
    (ids,) = llm.encode_rows(conversation, DecodeSettings())
    return ids


def greedy_with_penalties(model, prompt: list[int], steps: int, eos: set[int], frequency: float, presence: float):
    """Full forward per step; score[j] = log p(j) - c[j]·frequency - [c[j] > 0]·presence over generated tokens."""
    out: list[int] = []
    for _ in range(steps):
        scores = torch.log_softmax(full_logits(model, prompt + out)[-1], -1)
        for token, count in Counter(out).items():
            scores[token] -= count * frequency + presence
        token = int(torch.argmax(scores))
        out.append(token)
        if token in eos:
            break
    return out


@pytest.mark.parametrize(("frequency", "presence"), [(0.8, 0.0), (0.0, 1.5), (0.5, 0.5), (-0.7, 0.0)])
def test_greedy_penalties_equal_the_formula(tiny_llm, frequency, presence):
    eos = set(tiny_llm.stop_token_ids)
    for prompt in PROMPTS:
        expected = greedy_with_penalties(tiny_llm.model, _ids(tiny_llm, prompt), STEPS, eos, frequency, presence)
        result = tiny_llm.generate(
            prompt, frequency_penalty=frequency, presence_penalty=presence, max_new_tokens=STEPS
        )
        assert list(result.token_ids) == expected


def test_a_negative_penalty_changes_the_answer_into_repeats(tiny_llm):
    """The tiny random model never repeats a token by itself, so only a negative penalty shows on it."""
    plain = tiny_llm.generate(PROMPTS[0], max_new_tokens=STEPS).token_ids
    assert len(set(plain)) == len(plain)
    boosted = tiny_llm.generate(PROMPTS[0], frequency_penalty=-2.0, max_new_tokens=STEPS).token_ids
    assert len(set(boosted)) < len(boosted)


def test_each_request_of_a_batch_counts_its_own_tokens(tiny_llm):
    settings = {"frequency_penalty": 0.8, "presence_penalty": 0.3, "max_new_tokens": STEPS}
    batched = tiny_llm.generate(PROMPTS, **settings)
    assert [r.token_ids for r in batched] == [tiny_llm.generate(p, **settings).token_ids for p in PROMPTS]


JOKE = {
    "type": "object",
    "properties": {"setup": {"type": "string"}, "punchline": {"type": "string"}},
    "required": ["setup", "punchline"],
}


@pytest.mark.bundled
def test_a_frequency_penalty_ends_a_looping_json_answer(bundled_llm):
    """The bundled 135M model loops inside a JSON string ("A cat is a cat, a cat is a cat, ...") on
    this project's CPU (whether it does depends on the CPU's float rounding); the penalty applies
    inside the grammar's span too, and the answer ends, valid."""
    request = {"response_format": {"type": "json_schema", "json_schema": {"name": "joke", "schema": JOKE}},
               "max_new_tokens": 96}  # fmt: skip
    plain = bundled_llm.generate("Tell me a joke about cats.", **request)
    penalized = bundled_llm.generate("Tell me a joke about cats.", frequency_penalty=0.6, **request)
    assert penalized.token_ids != plain.token_ids
    assert penalized.finish_reason == "stop", penalized.text
    jsonschema.validate(penalized.parsed, JOKE)


@pytest.mark.parametrize("name", ["frequency_penalty", "presence_penalty"])
@pytest.mark.parametrize("value", [2.5, -2.01, float("nan"), "0.5"])
def test_out_of_range_penalties_are_refused_by_name(tiny_llm, name, value):
    with pytest.raises(InvalidSettingError) as error:
        tiny_llm.generate("Hi", **{name: value})
    assert error.value.parameter == name
