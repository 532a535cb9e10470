"""Tiny random models for tests: the root suite, both integrations and users' own method tests.

A 2-layer random Llama decodes in milliseconds on a CPU, and its logits are spread enough that
greedy choices are never near-ties, so token-for-token comparisons are exact. Give it a real
tokenizer (any chat tokenizer; the suites use the bundled SmolLM2's) so prompts render as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from aligned_llm.upstream_warnings import peft_wrapping

if TYPE_CHECKING:
    from aligned_llm import AlignedLLM

TINY_CONTEXT_WINDOW = 256
"""The tiny models' context window, in tokens."""
WIDE_CONTEXT_WINDOW = 2048
"""For prompts that carry tool specs (the tool prompt alone is about 300 tokens)."""


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


def save_tiny_model(
    folder: str | Path, seed: int, tokenizer: PreTrainedTokenizerBase, context_window: int = TINY_CONTEXT_WINDOW
) -> Path:
    """A tiny random model saved with ``tokenizer`` in ``folder``, loadable like any local model."""
    folder = Path(folder)
    build_tiny_model(seed=seed, vocab_size=len(tokenizer), context_window=context_window).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_lora(folder: str | Path, seed: int, vocab_size: int, random_weights: bool = True) -> Path:
    """A LoRA adapter (r=4 on q/v) for the seed-0 tiny model; random B weights so it changes the output."""
    from peft import LoraConfig, get_peft_model

    folder = Path(folder)
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=not random_weights)
    with peft_wrapping():
        peft_model = get_peft_model(build_tiny_model(seed=0, vocab_size=vocab_size), config)
    if random_weights:
        with torch.no_grad():
            for name, parameter in peft_model.named_parameters():
                if "lora_" in name:
                    parameter.normal_(0, 0.3)
    peft_model.save_pretrained(folder)
    return folder


class LoopTicks:
    """How many times the event loop ran another task (see :func:`count_loop_ticks`)."""

    def __init__(self) -> None:
        self.count = 0


@asynccontextmanager
async def count_loop_ticks() -> AsyncIterator[LoopTicks]:
    """Count event-loop turns while the block runs: a blocked loop counts (almost) none."""
    ticks = LoopTicks()

    async def tick() -> None:
        while True:
            ticks.count += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(tick())
    try:
        yield ticks
    finally:
        task.cancel()


class ForwardCount:
    """How many forwards a model ran (see :func:`count_forwards`)."""

    def __init__(self) -> None:
        self.count = 0


@contextmanager
def count_forwards(llm: AlignedLLM) -> Iterator[ForwardCount]:
    """Count the forwards of ``llm.model`` while the block runs: a batched forward counts once.

    Shows that work was shared (fewer forwards than the calls made alone) or never started (none).
    """
    forwards = ForwardCount()

    def counted(*_: object) -> None:
        forwards.count += 1

    handle = llm.model.register_forward_hook(counted)
    try:
        yield forwards
    finally:
        handle.remove()
