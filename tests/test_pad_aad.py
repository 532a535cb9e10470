"""PAD and AAD equal direct sequential re-computations of their formulas, on every model setup."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from aligned_llm import AlignedLLM, DecodeSettings, InvalidSettingError, Vanilla
from aligned_llm.prompts import normalize_prompts, render_profile
from aligned_llm.testing import build_tiny_model, save_tiny_lora, save_tiny_model
from tests.reference import full_logits, greedy_aad, greedy_pad

PROMPTS = [
    "Tell me about the moon.",
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Why is the sky blue? Give a long answer with examples."},
    ],
]
PROFILE = {"helpful": 1.0, "humor": 0.5}
STEPS = 10


def _rows(llm, prompt, **settings):
    conversation = normalize_prompts(prompt)[0][0]
    return llm.encode_rows(conversation, DecodeSettings(**settings))


def _eos(llm):
    return set(llm.stop_token_ids)


def _next_logits(model, prompt_ids):
    return lambda out: full_logits(model, prompt_ids + out)[-1]


# --- PAD ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("beta", "k", "base"), [(1.0, 10, "profiled"), (2.5, 5, "profiled"), (1.0, 10, "plain")])
def test_zero_shot_pad_equals_spec_recomputation(tiny_llm, beta, k, base):
    for prompt in PROMPTS:
        profiled, plain = _rows(tiny_llm, prompt, method="pad", profile=PROFILE)
        base_ids = profiled if base == "profiled" else plain
        model = tiny_llm.model
        expected = greedy_pad(
            _next_logits(model, base_ids), _next_logits(model, profiled), _next_logits(model, plain),
            beta, k, STEPS, _eos(tiny_llm),
        )  # fmt: skip
        result = tiny_llm.generate(
            prompt, method="pad", profile=PROFILE, beta=beta, k=k, pad_base=base, max_new_tokens=STEPS
        )
        assert list(result.token_ids) == expected


def test_pad_moves_away_from_direct_prompting(tiny_llm):
    direct = tiny_llm.generate(PROMPTS, profile=PROFILE, max_new_tokens=STEPS)
    pad = tiny_llm.generate(PROMPTS, method="pad", profile=PROFILE, beta=3.0, max_new_tokens=STEPS)
    assert [r.token_ids for r in direct] != [r.token_ids for r in pad]


def test_pad_beta_zero_is_vanilla_with_the_profile(tiny_llm):
    direct = tiny_llm.generate(PROMPTS, profile=PROFILE, max_new_tokens=STEPS)
    pad = tiny_llm.generate(PROMPTS, method="pad", profile=PROFILE, beta=0.0, max_new_tokens=STEPS)
    assert [r.token_ids for r in pad] == [r.token_ids for r in direct]


@pytest.fixture(scope="module")
def persrm_dir(tmp_path_factory, tokenizer):
    """A separate tiny PersRM with an authors'-format value head (Linear(hidden, hidden))."""
    folder = save_tiny_model(tmp_path_factory.mktemp("tiny-persrm"), seed=7, tokenizer=tokenizer)
    torch.manual_seed(8)
    weight = torch.eye(64) + 0.3 * torch.randn(64, 64)
    save_file({"v_head.summary.weight": weight, "v_head.summary.bias": 0.1 * torch.randn(64)},
              str(folder / "value_head.safetensors"))  # fmt: skip
    return folder


def test_pad_with_a_separate_persrm_and_value_head(tiny_dir, persrm_dir, tokenizer):
    llm = AlignedLLM.from_pretrained(tiny_dir, reward_model=persrm_dir)
    raw = AutoModelForCausalLM.from_pretrained(persrm_dir).eval()
    from safetensors.torch import load_file

    head = load_file(str(persrm_dir / "value_head.safetensors"))

    def persrm_logits(prompt_ids):
        def next_logits(out):
            with torch.no_grad():
                hidden = raw.model(input_ids=torch.tensor([prompt_ids + out])).last_hidden_state[0, -1]
                return raw.lm_head(hidden @ head["v_head.summary.weight"].T + head["v_head.summary.bias"]).float()

        return next_logits

    for prompt in PROMPTS:
        policy_ids, persrm_ids = _rows(llm, prompt, method="pad", profile="I love puns.")
        assert policy_ids == persrm_ids, "the authors feed the PersRM the same profiled ids"
        base = _next_logits(llm.model, policy_ids)
        expected = greedy_pad(base, persrm_logits(persrm_ids), base, 1.0, 10, STEPS, _eos(llm))
        result = llm.generate(prompt, method="pad", profile="I love puns.", max_new_tokens=STEPS)
        assert list(result.token_ids) == expected
    batch = llm.generate(PROMPTS, method="pad", profile="I love puns.", max_new_tokens=STEPS)
    alone = [llm.generate(p, method="pad", profile="I love puns.", max_new_tokens=STEPS) for p in PROMPTS]
    assert [r.token_ids for r in batch] == [r.token_ids for r in alone]


def test_pad_with_a_lora_persrm_runs_in_the_base_forward(tiny_dir, tmp_path, tokenizer):
    lora = save_tiny_lora(tmp_path / "persrm-lora", seed=21, vocab_size=len(tokenizer))
    llm = AlignedLLM.from_pretrained(tiny_dir, reward_model=lora)
    assert llm.reward_model is None and "persrm" in llm.model.peft_config
    peft_model = llm.model

    def as_adapter(prompt_ids, adapter):
        def next_logits(out):
            if adapter is None:
                with peft_model.disable_adapter():
                    return full_logits(peft_model, prompt_ids + out)[-1]
            peft_model.set_adapter(adapter)
            return full_logits(peft_model, prompt_ids + out)[-1]

        return next_logits

    for prompt in PROMPTS:
        ids, _ = _rows(llm, prompt, method="pad", profile=PROFILE)
        base = as_adapter(ids, None)
        expected = greedy_pad(base, as_adapter(ids, "persrm"), base, 1.5, 10, STEPS, _eos(llm))
        result = llm.generate(prompt, method="pad", profile=PROFILE, beta=1.5, max_new_tokens=STEPS)
        assert list(result.token_ids) == expected
    plain = AlignedLLM.from_pretrained(tiny_dir).generate(PROMPTS[0], profile=PROFILE, max_new_tokens=STEPS)
    assert llm.generate(PROMPTS[0], profile=PROFILE, max_new_tokens=STEPS).token_ids == plain.token_ids, (
        "vanilla must run the base weights, not the PersRM adapter"
    )


def test_profile_rendering():
    assert render_profile({"helpful": 1.0, "harmless": 1.0}) == "helpful and harmless"
    assert render_profile({"helpful": 1, "humor": 0.5, "harmless": 0}) == "helpful (weight 1) and humor (weight 0.5)"
    assert render_profile("  I like short answers. ") == "I like short answers."


def test_profile_goes_before_the_last_user_message(tiny_llm):
    conversation = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Tell me a joke."},
    ]
    guided = tiny_llm.chat_format.with_guidance(conversation, None, {"humor": 1.0})
    assert guided[:2] == conversation[:2]
    assert guided[2]["content"] == (
        "[Guidelines] Your task is to generate response by considering the following principle. "
        "[Principles] humor [Instruction] Tell me a joke."
    )


# --- AAD ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter_llm(tiny_dir, tiny_adapter_dir):
    return AlignedLLM.from_pretrained(tiny_dir, adapter=tiny_adapter_dir)


@pytest.mark.parametrize("alpha", [0.1, 0.02, 0.5])
def test_aad_adapter_pair_equals_spec_recomputation(adapter_llm, alpha):
    peft_model = adapter_llm.model

    def dpo(ids):
        return lambda out: full_logits(peft_model, ids + out)[-1]

    def sft(ids):
        def next_logits(out):
            with peft_model.disable_adapter():
                return full_logits(peft_model, ids + out)[-1]

        return next_logits

    for prompt in PROMPTS:
        ids, _ = _rows(adapter_llm, prompt, method="aad")
        expected = greedy_aad(dpo(ids), sft(ids), alpha, STEPS, _eos(adapter_llm))
        result = adapter_llm.generate(prompt, method="aad", alpha=alpha, max_new_tokens=STEPS)
        assert list(result.token_ids) == expected


def test_aad_two_model_pair_equals_spec_recomputation(tiny_dir, tiny_reference_dir, tiny_llm):
    llm = AlignedLLM.from_pretrained(tiny_dir, reference=tiny_reference_dir)
    reference = AutoModelForCausalLM.from_pretrained(tiny_reference_dir).eval()
    for prompt in PROMPTS:
        ids, _ = _rows(llm, prompt, method="aad")
        expected = greedy_aad(_next_logits(tiny_llm.model, ids), _next_logits(reference, ids), 0.1, STEPS, _eos(llm))
        assert list(llm.generate(prompt, method="aad", max_new_tokens=STEPS).token_ids) == expected
    batch = llm.generate(PROMPTS, method="aad", max_new_tokens=STEPS)
    assert [r.token_ids for r in batch] == [
        llm.generate(p, method="aad", max_new_tokens=STEPS).token_ids for p in PROMPTS
    ]


def test_aad_alpha_one_is_greedy_dpo(adapter_llm):
    aad = adapter_llm.generate(PROMPTS, method="aad", alpha=1.0, max_new_tokens=STEPS)
    greedy_dpo = adapter_llm.generate(PROMPTS, max_new_tokens=STEPS)
    greedy_sft = adapter_llm.generate(PROMPTS, method=Vanilla(adapter="__base__"), max_new_tokens=STEPS)
    assert [r.token_ids for r in aad] == [r.token_ids for r in greedy_dpo]
    assert [r.token_ids for r in greedy_dpo] != [r.token_ids for r in greedy_sft], "the adapter must matter"


def test_aad_with_a_no_op_adapter_is_vanilla_greedy(tiny_dir, tmp_path, tokenizer, tiny_llm):
    """DPO == SFT makes every advantage 0: the tie-break must give plain greedy decoding."""
    identity = save_tiny_lora(tmp_path / "no-op-lora", seed=1, vocab_size=len(tokenizer), random_weights=False)
    llm = AlignedLLM.from_pretrained(tiny_dir, adapter=identity)
    aad = llm.generate(PROMPTS, method="aad", alpha=0.05, max_new_tokens=STEPS)
    assert [r.token_ids for r in aad] == [r.token_ids for r in tiny_llm.generate(PROMPTS, max_new_tokens=STEPS)]


def test_aad_batch_equals_alone_and_trace_has_the_advantage(adapter_llm):
    batch = adapter_llm.generate(PROMPTS, method="aad", max_new_tokens=STEPS, trace=True)
    alone = [adapter_llm.generate(p, method="aad", max_new_tokens=STEPS) for p in PROMPTS]
    assert [r.token_ids for r in batch] == [r.token_ids for r in alone]
    for token in batch[0].trace:
        assert set(token.logprobs) == {"dpo", "sft"}
        assert token.score == pytest.approx(token.logprobs["dpo"] - token.logprobs["sft"], abs=1e-4)


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "parameter"),
    [
        ({"method": "aad", "alpha": 0.0}, "alpha"),
        ({"method": "aad", "alpha": 1.5}, "alpha"),
        ({"method": "pad", "profile": "x", "k": 0}, "k"),
        ({"method": "pad", "profile": "x", "beta": -1.0}, "beta"),
        ({"method": "pad"}, "profile"),
        ({"method": "pad", "profile": {}}, "profile"),
        ({"method": "pad", "profile": {"humor": -1}}, "profile"),
        ({"method": "pad", "profile": {"humor": 0}}, "profile"),
        ({"method": "pad", "profile": 5}, "profile"),
        ({"method": "pad", "profile": "x", "pad_base": "other"}, "pad_base"),
    ],
)
def test_bad_pad_aad_settings(adapter_llm, settings, parameter):
    with pytest.raises(InvalidSettingError) as raised:
        adapter_llm.generate("Hello", **settings)
    assert raised.value.parameter == parameter


def test_aad_without_a_pair_is_a_clear_error(tiny_llm):
    with pytest.raises(InvalidSettingError, match="needs a DPO/SFT pair"):
        tiny_llm.generate("Hello", method="aad")
    with pytest.raises(InvalidSettingError, match="turns adapters off"):
        tiny_llm.generate("Hello", method=Vanilla(adapter="__base__"))


def test_a_pair_with_another_tokenizer_is_a_clear_error(tiny_dir, tmp_path, tokenizer):
    other = tmp_path / "other-tokenizer"
    build_tiny_model(seed=3, vocab_size=len(tokenizer) + 1).save_pretrained(other)
    changed = type(tokenizer).from_pretrained(tiny_dir)
    changed.add_tokens(["<extra-token>"])
    changed.save_pretrained(other)
    with pytest.raises(InvalidSettingError, match="tokenizer differs") as raised:
        AlignedLLM.from_pretrained(tiny_dir, reference=other)
    assert raised.value.parameter == "reference"
    with pytest.raises(InvalidSettingError, match="tokenizer differs"):
        AlignedLLM.from_pretrained(tiny_dir, reward_model=other)
