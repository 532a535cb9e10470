"""pytest fixtures shared by the root suite, both integrations and users' own method tests.

Tiny random models (see :mod:`aligned_llm.testing`) saved as local folders with the bundled
SmolLM2's tokenizer, and the bundled model itself; every fixture is session-scoped, so a
session builds each model once. Load the plugin with ``-p aligned_llm.pytest_plugin`` (the
suites' ``addopts`` do); it is never loaded on its own, so installing aligned-llm leaves other
test suites as they are.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from aligned_llm import AlignedLLM
from aligned_llm.loading import bundled_model_dir
from aligned_llm.testing import WIDE_CONTEXT_WINDOW, save_tiny_lora, save_tiny_model


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op torch thread, here and in the processes tests start, unless ``OMP_NUM_THREADS`` says otherwise.

    The tiny models' ops are too small to split, and on a shared 2-core machine a second thread
    waits at every barrier for a core (a tiny forward took 140 ms on 2 threads, 13 ms on 1; the
    bundled model is faster on 1 there too). Notebook kernels, CLI subprocesses and Ray workers
    inherit the setting: with two test workers, a kernel on two threads of its own oversubscribes
    the cores (the tuning notebook took 357 s so, against ~35 s alone).
    """
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def bundled_dir() -> Path:
    """The bundled SmolLM2 as a safetensors folder (converted once into the user cache)."""
    return bundled_model_dir()


@pytest.fixture(scope="session")
def tokenizer(bundled_dir: Path) -> PreTrainedTokenizerBase:
    """The SmolLM2 tokenizer: a real BPE with a ChatML template, shared by the tiny models."""
    return AutoTokenizer.from_pretrained(bundled_dir, local_files_only=True)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase) -> Path:
    """The seed-0 tiny model (context window 256) as a model folder."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), seed=0, tokenizer=tokenizer)


@pytest.fixture(scope="session")
def tiny_llm(tiny_dir: Path) -> AlignedLLM:
    """The seed-0 tiny model, loaded."""
    return AlignedLLM.from_pretrained(tiny_dir, device="cpu")


@pytest.fixture(scope="session")
def bundled_llm() -> AlignedLLM:
    """The bundled SmolLM2, loaded on the CPU."""
    return AlignedLLM.default(device="cpu")


@pytest.fixture(scope="session")
def tiny_adapter_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase) -> Path:
    """A LoRA "DPO" adapter for the seed-0 tiny model (random weights, so it changes the output)."""
    return save_tiny_lora(tmp_path_factory.mktemp("tiny-dpo-lora"), seed=11, vocab_size=len(tokenizer))


@pytest.fixture(scope="session")
def tiny_reference_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase) -> Path:
    """A second tiny model (different weights, same tokenizer): the SFT side of a two-model pair."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-reference"), seed=3, tokenizer=tokenizer)


@pytest.fixture(scope="session")
def tiny_pair_llm(tiny_dir: Path, tiny_adapter_dir: Path) -> AlignedLLM:
    """The tiny model with a LoRA "DPO" adapter: an AAD pair (adapter on = DPO, off = SFT)."""
    return AlignedLLM.from_pretrained(tiny_dir, adapter=tiny_adapter_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_wide_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase) -> Path:
    """The seed-0 tiny model with a context window long enough for tool prompts."""
    return save_tiny_model(
        tmp_path_factory.mktemp("tiny-wide"), seed=0, tokenizer=tokenizer, context_window=WIDE_CONTEXT_WINDOW
    )


@pytest.fixture(scope="session")
def tiny_wide_llm(tiny_wide_dir: Path) -> AlignedLLM:
    """The wide tiny model, loaded."""
    return AlignedLLM.from_pretrained(tiny_wide_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_wide_pair_llm(tiny_wide_dir: Path, tiny_adapter_dir: Path) -> AlignedLLM:
    """``tiny_pair_llm`` with the wide context window: an AAD pair for tool prompts."""
    return AlignedLLM.from_pretrained(tiny_wide_dir, adapter=tiny_adapter_dir, device="cpu")
