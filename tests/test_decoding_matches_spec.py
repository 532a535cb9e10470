"""Each method equals an independent, unbatched, sequential re-computation of its formula."""

from __future__ import annotations

import pytest
import torch

from aligned_llm import OPAD, InvalidSettingError
from tests.reference import greedy_linear, greedy_opad, greedy_vanilla

PROMPTS = [
    "Tell me about the moon.",
    "Write a short poem about autumn leaves falling in the quiet park.",
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Why is the sky blue?"},
        {"role": "assistant", "content": "Rayleigh scattering."},
        {"role": "user", "content": "Explain more."},
    ],
]
PRINCIPLE = "Answer in lowercase letters only."
STEPS = 12


def _rows(llm, prompt, method, principle=PRINCIPLE):
    from aligned_llm import DecodeSettings
    from aligned_llm.prompts import normalize_prompts

    conversation = normalize_prompts(prompt)[0][0]
    return llm.encode_rows(conversation, DecodeSettings(method=method, principle=principle))


def _eos(llm):
    return set(llm.stop_token_ids)


@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_vanilla_greedy_equals_model_generate(tiny_llm, prompt):
    (ids,) = _rows(tiny_llm, prompt, "vanilla", principle=None)
    expected = tiny_llm.model.generate(
        torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        do_sample=False, max_new_tokens=STEPS, eos_token_id=sorted(_eos(tiny_llm)), pad_token_id=2,
    )[0, len(ids):].tolist()  # fmt: skip
    result = tiny_llm.generate(prompt, max_new_tokens=STEPS)
    assert list(result.token_ids) == expected
    assert len(set(expected)) > 1, "a degenerate model would make this test vacuous"


def test_vanilla_equals_sequential_recomputation(tiny_llm):
    (ids,) = _rows(tiny_llm, PROMPTS[2], "vanilla", principle=None)
    result = tiny_llm.generate(PROMPTS[2], max_new_tokens=STEPS)
    assert list(result.token_ids) == greedy_vanilla(tiny_llm.model, ids, STEPS, _eos(tiny_llm))


@pytest.mark.parametrize("window", ["reference", "last", 1])
@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_opad_equals_spec_recomputation(tiny_llm, window, beta):
    for prompt in PROMPTS:
        constrained, unconstrained = _rows(tiny_llm, prompt, "opad")
        expected = greedy_opad(tiny_llm.model, constrained, unconstrained, beta, window, STEPS, _eos(tiny_llm))
        result = tiny_llm.generate(prompt, method="opad", principle=PRINCIPLE, beta=beta, opad_window=window,
                                   max_new_tokens=STEPS)  # fmt: skip
        assert list(result.token_ids) == expected


def test_opad_windows_differ_somewhere(tiny_llm):
    """The three windows are different rules; on these prompts they must not all coincide."""
    outputs = {
        window: tuple(
            tuple(r.token_ids)
            for r in tiny_llm.generate(
                PROMPTS, method="opad", principle=PRINCIPLE, beta=0.5, opad_window=window, max_new_tokens=STEPS
            )
        )
        for window in ("reference", "last", 1)
    }
    assert len(set(outputs.values())) > 1


def test_opad_moves_away_from_direct_prompting(tiny_llm):
    direct = tiny_llm.generate(PROMPTS, principle=PRINCIPLE, max_new_tokens=STEPS)
    opad = tiny_llm.generate(PROMPTS, method="opad", principle=PRINCIPLE, beta=0.5, max_new_tokens=STEPS)
    assert [r.token_ids for r in direct] != [r.token_ids for r in opad]


def test_linear_equals_spec_recomputation(tiny_llm):
    for prompt in PROMPTS:
        constrained, unconstrained = _rows(tiny_llm, prompt, "linear")
        expected = greedy_linear(tiny_llm.model, constrained, unconstrained, 2.0, 0.8, STEPS, _eos(tiny_llm))
        result = tiny_llm.generate(prompt, method="linear", principle=PRINCIPLE, max_new_tokens=STEPS)
        assert list(result.token_ids) == expected


def test_method_object_equals_method_name(tiny_llm):
    by_name = tiny_llm.generate(PROMPTS[0], method="opad", principle=PRINCIPLE, beta=2.0, max_new_tokens=STEPS)
    by_object = tiny_llm.generate(PROMPTS[0], method=OPAD(beta=2.0), principle=PRINCIPLE, max_new_tokens=STEPS)
    assert by_name.token_ids == by_object.token_ids


@pytest.mark.parametrize("principle", ["", "  \n"])
@pytest.mark.parametrize("method", ["opad", "linear"])
def test_blank_principle_is_refused_not_decoded_plainly(tiny_llm, method, principle):
    with pytest.raises(InvalidSettingError, match=r"^principle: .*non-empty") as raised:
        tiny_llm.generate(PROMPTS, method=method, principle=principle, max_new_tokens=STEPS)
    assert raised.value.parameter == "principle"


def test_bundled_vanilla_greedy_equals_model_generate(bundled_llm):
    prompt = "Give me three tips for learning to cook."
    (ids,) = _rows(bundled_llm, prompt, "vanilla", principle=None)
    expected = bundled_llm.model.generate(
        torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), do_sample=False,
        max_new_tokens=24, pad_token_id=bundled_llm.tokenizer.pad_token_id,
    )[0, len(ids):].tolist()  # fmt: skip
    assert list(bundled_llm.generate(prompt, max_new_tokens=24).token_ids) == expected
