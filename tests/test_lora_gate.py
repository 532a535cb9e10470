"""The per-row LoRA gate gives what peft's adapter routing gives, and is used only where it applies."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer

from aligned_llm import AlignedLLM
from aligned_llm.lora_gate import lora_gate
from aligned_llm.testing import build_tiny_model

PROMPTS = ["Hello there", "Name a river.", "What is two plus two?"]
ROWS = ["default", "__base__", "__base__", "default"]


@pytest.fixture(scope="module")
def peft_model(tokenizer) -> PeftModel:
    torch.manual_seed(5)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(build_tiny_model(seed=0, vocab_size=len(tokenizer)), config).eval()


def _ids(vocab_size: int) -> torch.Tensor:
    return torch.randint(0, vocab_size, (len(ROWS), 7), generator=torch.Generator().manual_seed(0))


@torch.inference_mode()
def test_gated_rows_equal_each_row_alone(peft_model, tokenizer):
    ids = _ids(len(tokenizer))
    gate = lora_gate(peft_model, ROWS)
    assert gate is not None
    with gate.rows(ROWS):
        gated = peft_model(input_ids=ids).logits
    with_adapter = peft_model(input_ids=ids).logits
    with peft_model.disable_adapter():
        without_adapter = peft_model(input_ids=ids).logits
    assert not torch.allclose(with_adapter, without_adapter, atol=1e-3), "the adapter must matter"
    for row, adapter in enumerate(ROWS):
        expected = with_adapter[row] if adapter == "default" else without_adapter[row]
        torch.testing.assert_close(gated[row], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gated, peft_model(input_ids=ids, adapter_names=ROWS).logits, rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_the_gate_does_nothing_outside_its_block(peft_model, tokenizer):
    ids = _ids(len(tokenizer))
    before = peft_model(input_ids=ids).logits
    gate = lora_gate(peft_model, ROWS)
    with gate.rows(ROWS):
        peft_model(input_ids=ids)
    assert gate.row_gate is None
    torch.testing.assert_close(peft_model(input_ids=ids).logits, before, rtol=0, atol=0)


def test_the_gate_refuses_what_it_cannot_do(tokenizer, peft_model):
    assert lora_gate(peft_model, ["default", "other"]) is None, "a second adapter needs peft's routing"
    dora = get_peft_model(
        build_tiny_model(seed=0, vocab_size=len(tokenizer)),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True),
    )
    assert lora_gate(dora, ["default", "__base__"]) is None
    embedding = get_peft_model(
        build_tiny_model(seed=0, vocab_size=len(tokenizer)),
        LoraConfig(r=4, target_modules=["q_proj", "embed_tokens"]),
    )
    assert lora_gate(embedding, ["default", "__base__"]) is None


def test_aad_uses_the_gate_and_never_splits_the_batch(tiny_dir, tiny_adapter_dir, monkeypatch):
    """With the gate, peft's per-adapter batch splitting is never called, and the tokens do not change."""
    llm = AlignedLLM.from_pretrained(tiny_dir, adapter=tiny_adapter_dir)
    gated = llm.generate(PROMPTS, method="aad", alpha=0.1, max_new_tokens=8)

    def refuse(*_args, **_kwargs):
        raise AssertionError("peft's mixed-batch forward was called")

    monkeypatch.setattr(LoraLayer, "_mixed_batch_forward", refuse)
    for module in llm.model.modules():
        if isinstance(module, LoraLayer):
            monkeypatch.setattr(module, "_mixed_batch_forward", refuse, raising=False)
    assert [r.token_ids for r in llm.generate(PROMPTS, method="aad", alpha=0.1, max_new_tokens=8)] == [
        r.token_ids for r in gated
    ]


def test_without_the_gate_aad_gives_the_same_tokens(tiny_dir, tiny_adapter_dir, monkeypatch):
    llm = AlignedLLM.from_pretrained(tiny_dir, adapter=tiny_adapter_dir)
    gated = llm.generate(PROMPTS, method="aad", alpha=0.1, max_new_tokens=8, trace=True)
    monkeypatch.setattr("aligned_llm.engine.kv.forward.lora_gate", lambda _model, _rows: None)
    routed = llm.generate(PROMPTS, method="aad", alpha=0.1, max_new_tokens=8, trace=True)
    assert [r.token_ids for r in routed] == [r.token_ids for r in gated]
    for gated_result, routed_result in zip(gated, routed, strict=True):
        for gated_token, routed_token in zip(gated_result.trace, routed_result.trace, strict=True):
            assert gated_token.score == pytest.approx(routed_token.score, abs=1e-4)
