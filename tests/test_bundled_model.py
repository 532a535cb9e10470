"""The bundled SmolLM2: loads offline, and OPAD's effect under a checkable principle is measurable."""

from __future__ import annotations

import json
import socket

import pytest
import torch
from pytest_socket import SocketBlockedError

from aligned_llm import AlignedLLM
from aligned_llm.cache import MANIFEST
from aligned_llm.loading import bundled_model_dir

PROMPTS = [
    "Tell me about the moon.",
    "How do I make a cup of tea?",
    "What are the benefits of exercise?",
    "Why is the sky blue?",
]
BRIEF = "Be extremely brief: answer in at most ten words."


def _words(results):
    return sum(len(r.text.split()) for r in results) / len(results)


def test_default_loads_offline(bundled_llm):
    with pytest.raises(SocketBlockedError):
        socket.create_connection(("example.org", 443), timeout=1)
    assert isinstance(bundled_llm, AlignedLLM)
    assert bundled_llm.name == "SmolLM2-135M-Instruct"
    assert bundled_llm.context_window == 8192
    result = bundled_llm.generate("What is the capital of France?", max_new_tokens=20)
    assert "Paris" in result.text
    assert result.finish_reason == "stop"


def test_opad_under_a_brevity_principle_shortens_answers(bundled_llm):
    """Measured effect: OPAD's answers are shorter than plain and direct-prompting answers."""
    plain = bundled_llm.generate(PROMPTS, max_new_tokens=60)
    direct = bundled_llm.generate(PROMPTS, principle=BRIEF, max_new_tokens=60)
    opad = bundled_llm.generate(PROMPTS, method="opad", principle=BRIEF, max_new_tokens=60)
    assert [r.text for r in opad] != [r.text for r in plain]
    assert _words(opad) < 0.75 * _words(direct)
    assert _words(opad) < 0.75 * _words(plain)
    assert all(r.text.strip() for r in opad), "guidance must not produce empty answers"


def test_first_use_converts_the_gguf_once_into_the_cache(monkeypatch, tmp_path, bundled_llm, capfd):
    monkeypatch.setenv("ALIGNED_LLM_CACHE", str(tmp_path))
    capfd.readouterr()
    folder = bundled_model_dir()
    assert "Loading weights" not in capfd.readouterr().err, "the conversion shows its own progress only"
    assert folder.parent == tmp_path
    weights = folder / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert bundled_model_dir() == folder and weights.stat().st_mtime_ns == stamp, "converted only once"
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [folder.name], "no staging folder left behind"
    assert (folder / MANIFEST).is_file(), "the manifest vouches for the conversion"
    converted = AlignedLLM.from_pretrained(folder, device="cpu")
    ids = torch.tensor([bundled_llm.tokenizer("The moon is")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(converted.model(ids).logits, bundled_llm.model(ids).logits)


@pytest.fixture(scope="module")
def bundled_pair():
    return AlignedLLM.default(adapter="bundled", device="cpu")


def test_bundled_adapter_is_small_and_documented():
    from aligned_llm.loading import BUNDLED_ADAPTER

    weights = BUNDLED_ADAPTER / "adapter_model.safetensors"
    assert weights.stat().st_size < 4 * 1024 * 1024
    record = json.loads((BUNDLED_ADAPTER / "training_config.json").read_text())
    assert record["data"]["pairs"] > 0 and record["lora"]["r"] == 8


def test_aad_on_the_bundled_pair_moves_the_metric_against_greedy_sft(bundled_pair):
    """The adapter was trained towards brevity (docs/aad.md): AAD must answer shorter than SFT."""
    from aligned_llm import Vanilla

    prompts = [
        "What are the names of some famous actors that started their careers on Broadway?",
        "How do I make a cup of tea?",
        "What are the benefits of exercise?",
        "Explain how a rainbow forms.",
    ]
    sft = bundled_pair.generate(prompts, method=Vanilla(adapter="__base__"), max_new_tokens=80)
    aad = bundled_pair.generate(prompts, method="aad", alpha=0.1, max_new_tokens=80)
    assert _words(aad) < 0.75 * _words(sft)
    assert all(r.text.strip() for r in aad)
