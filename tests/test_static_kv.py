"""The static KV store (a preallocated slot pool, fixed shapes) decodes exactly the tokens of the padded store."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, MistralConfig

from aligned_llm import AlignedLLM, InvalidSettingError
from aligned_llm.engine.kv.slots import LENGTH_QUANTUM, SlotPools, length_bucket, row_bucket
from tests.test_constraints import ONE_CALL, PROMPT, TOOLS
from tests.test_continuous_batching import LONG, MIXED, PRINCIPLE, SHORT, _alone, _same, arriving_mid_flight, recorded

LONGER = " ".join(f"Point {n}: the keeper climbs the stairs and checks the lamp." for n in range(12))
"""A prompt longer than one ``LENGTH_QUANTUM`` of positions."""


def _static(llm: AlignedLLM, **options) -> AlignedLLM:
    return AlignedLLM(llm.model, llm.tokenizer, reference=llm.reference, kv_store="static", **options)


def test_buckets_round_rows_to_powers_of_two_and_positions_to_the_quantum():
    assert [row_bucket(n) for n in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 4, 8, 16]
    assert length_bucket(1, 4096) == LENGTH_QUANTUM
    assert length_bucket(LENGTH_QUANTUM + 1, 4096) == 2 * LENGTH_QUANTUM
    assert length_bucket(LENGTH_QUANTUM + 1, LENGTH_QUANTUM + 5) == LENGTH_QUANTUM + 5


def test_every_method_alone_decodes_the_same_tokens_on_both_stores(tiny_pair_llm):
    padded = _alone(tiny_pair_llm, MIXED)
    static = _alone(_static(tiny_pair_llm), MIXED)
    _same(static, padded)
    for result, reference in zip(static, padded, strict=True):
        for token, expected in zip(result.trace, reference.trace, strict=True):
            assert token.score == pytest.approx(expected.score, abs=1e-4)


def test_staggered_arrivals_and_leaves_on_the_static_store_decode_as_if_alone(tiny_pair_llm):
    alone = _alone(tiny_pair_llm, MIXED)
    results, forwards = arriving_mid_flight(_static(tiny_pair_llm), MIXED)
    _same(results, alone)
    decode_rows = forwards.decode_rows
    assert decode_rows[:3] == [1, 1, 1]
    assert set(decode_rows) <= {1, 2, 4, 8, 16}, "every decode step runs on a power-of-two row bucket"
    assert len(set(forwards.widths[len(forwards.shapes) - len(decode_rows) :])) <= 3, "few attended widths"


def test_two_model_lanes_and_the_lora_gate_give_the_same_tokens(tiny_llm, tiny_reference_dir, tiny_pair_llm):
    pair = AlignedLLM.from_pretrained(tiny_llm.model.config._name_or_path, reference=tiny_reference_dir, device="cpu")
    cases = [("Hi", {"method": "aad", "alpha": 0.2, "max_new_tokens": 9}), (SHORT, {"max_new_tokens": 7})]
    _same(_alone(_static(pair), cases), _alone(pair, cases))
    gated = [(LONG, {"method": "aad", "alpha": 0.3, "max_new_tokens": 10})]
    _same(_alone(_static(tiny_pair_llm), gated), _alone(tiny_pair_llm, gated))


def test_grammars_penalties_and_seeds_give_the_same_tokens(tiny_wide_pair_llm):
    cases = [
        (PROMPT, {"tools": TOOLS, **ONE_CALL, "max_new_tokens": 40}),
        (SHORT, {"frequency_penalty": 1.5, "presence_penalty": 0.5, "max_new_tokens": 12}),
        (SHORT, {"temperature": 1.1, "top_p": 0.8, "seed": 3, "max_new_tokens": 12}),
    ]
    _same(_alone(_static(tiny_wide_pair_llm), cases), _alone(tiny_wide_pair_llm, cases))


def test_prompts_longer_than_a_length_bucket_and_growing_row_buckets(tiny_wide_llm):
    cases = [(LONGER, {"max_new_tokens": 6})] + [(f"{SHORT} ({n})", {"max_new_tokens": 5 + n}) for n in range(4)]
    assert len(tiny_wide_llm.tokenizer(LONGER)["input_ids"]) > LENGTH_QUANTUM
    llm = _static(tiny_wide_llm)
    together = [generation.result() for generation in [llm.submit(p, **s) for p, s in cases]]
    _same(together, _alone(tiny_wide_llm, cases))


def test_a_cancelled_request_frees_its_slot_and_the_pool_is_reused(tiny_llm):
    llm = _static(tiny_llm)
    with recorded(llm.model, hold_at=2) as forwards:
        doomed = llm.submit(LONG, max_new_tokens=50)
        assert forwards.held.wait(60)
        kept = llm.submit(SHORT, method="opad", principle=PRINCIPLE, max_new_tokens=8)
        doomed.cancel()
        forwards.release.set()
        assert doomed.result().finish_reason == "cancelled"
        result = kept.result()
    _same([result], _alone(tiny_llm, [(SHORT, {"method": "opad", "principle": PRINCIPLE, "max_new_tokens": 8})]))


def test_a_pool_handed_back_is_reused_when_it_holds_the_next_lane(tiny_llm):
    pools = SlotPools()
    like = [(torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4))] * 3
    pool = pools.take(tiny_llm.model, like, slots=3, positions=40)
    assert (pool.slots, pool.positions) == (4, LENGTH_QUANTUM)
    pools.give_back(tiny_llm.model, pool)
    assert pools.take(tiny_llm.model, like, slots=2, positions=100) is pool
    pools.give_back(tiny_llm.model, pool)
    grown = pools.take(tiny_llm.model, like, slots=5, positions=100)
    assert (grown.slots, grown.positions) == (8, LENGTH_QUANTUM)


def test_the_static_store_is_refused_for_sliding_window_models(tokenizer):
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, sliding_window=8,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_config(config).to(torch.float32)
    with pytest.raises(InvalidSettingError) as raised:
        AlignedLLM(model, tokenizer, kv_store="static")
    assert raised.value.parameter == "kv_store"
    assert "padded" in str(raised.value)


def test_the_compiled_static_step_gives_the_same_tokens(tiny_llm):
    cases = [(SHORT, {"max_new_tokens": 6}), ("Hi", {"method": "opad", "principle": PRINCIPLE, "max_new_tokens": 6})]
    compiled = _static(tiny_llm, compile_step=True)
    _same(_alone(compiled, cases), _alone(tiny_llm, cases))


@pytest.mark.parametrize(
    ("options", "parameter"),
    [({"compile_step": True}, "compile_step"), ({"kv_store": "static", "compile_step": "yes"}, "compile_step")],
)
def test_bad_engine_options_name_themselves(tiny_llm, options, parameter):
    with pytest.raises(InvalidSettingError) as raised:
        AlignedLLM(tiny_llm.model, tiny_llm.tokenizer, **options)
    assert raised.value.parameter == parameter
