"""Shared fixtures: a tiny random Llama built from a config (fast), and the bundled model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from aligned_llm import AlignedLLM
from aligned_llm.loading import bundled_model_dir

TINY_CONTEXT_WINDOW = 256
WIDE_CONTEXT_WINDOW = 2048
"""For prompts that carry tool specs (the tool prompt alone is about 300 tokens)."""


@pytest.fixture(scope="session")
def bundled_dir() -> Path:
    """The bundled SmolLM2 as a safetensors folder (converted once into the user cache)."""
    return bundled_model_dir()


@pytest.fixture(scope="session")
def tokenizer(bundled_dir):
    """The SmolLM2 tokenizer: a real BPE with a ChatML template, shared by the tiny models."""
    return AutoTokenizer.from_pretrained(bundled_dir, local_files_only=True)


def build_tiny_model(seed: int, vocab_size: int, context_window: int = TINY_CONTEXT_WINDOW) -> LlamaForCausalLM:
    """A 2-layer random Llama whose logits are spread enough that argmax is never a near-tie."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context_window,
        initializer_range=0.2,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def save_tiny_model(folder: Path, seed: int, tokenizer, context_window: int = TINY_CONTEXT_WINDOW) -> Path:
    """A tiny random model saved with ``tokenizer``, loadable like any local model."""
    build_tiny_model(seed=seed, vocab_size=len(tokenizer), context_window=context_window).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tokenizer) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), seed=0, tokenizer=tokenizer)


@pytest.fixture(scope="session")
def tiny_llm(tiny_dir) -> AlignedLLM:
    return AlignedLLM.from_pretrained(tiny_dir, device="cpu")


@pytest.fixture(scope="session")
def bundled_llm() -> AlignedLLM:
    return AlignedLLM.default(device="cpu")


def save_tiny_lora(folder: Path, seed: int, vocab_size: int, random_weights: bool = True) -> Path:
    """A LoRA adapter (r=4 on q/v) on the seed-0 tiny model; random B so it changes the output."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=not random_weights)
    peft_model = get_peft_model(build_tiny_model(seed=0, vocab_size=vocab_size), config)
    if random_weights:
        with torch.no_grad():
            for name, parameter in peft_model.named_parameters():
                if "lora_" in name:
                    parameter.normal_(0, 0.3)
    peft_model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_adapter_dir(tmp_path_factory, tokenizer) -> Path:
    return save_tiny_lora(tmp_path_factory.mktemp("tiny-dpo-lora"), seed=11, vocab_size=len(tokenizer))


@pytest.fixture(scope="session")
def tiny_reference_dir(tmp_path_factory, tokenizer) -> Path:
    """A second tiny model (different weights, same tokenizer): the SFT side of a two-model pair."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-reference"), seed=3, tokenizer=tokenizer)


@pytest.fixture(scope="session")
def tiny_pair_llm(tiny_dir, tiny_adapter_dir) -> AlignedLLM:
    """The tiny model with a LoRA "DPO" adapter: an AAD pair (adapter on = DPO, off = SFT)."""
    return AlignedLLM.from_pretrained(tiny_dir, adapter=tiny_adapter_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_wide_dir(tmp_path_factory, tokenizer) -> Path:
    """The seed-0 tiny model with a context window long enough for tool prompts."""
    return save_tiny_model(
        tmp_path_factory.mktemp("tiny-wide"), seed=0, tokenizer=tokenizer, context_window=WIDE_CONTEXT_WINDOW
    )


@pytest.fixture(scope="session")
def tiny_wide_llm(tiny_wide_dir) -> AlignedLLM:
    return AlignedLLM.from_pretrained(tiny_wide_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_wide_pair_llm(tiny_wide_dir, tiny_adapter_dir) -> AlignedLLM:
    """``tiny_pair_llm`` with the wide context window: an AAD pair for tool prompts."""
    return AlignedLLM.from_pretrained(tiny_wide_dir, adapter=tiny_adapter_dir, device="cpu")
