"""Broken model, adapter and value-head files raise ``ModelLoadError`` naming the file; nothing runs a folder's code."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from aligned_llm import AlignedLLM, InvalidSettingError, ModelLoadError, ModelPathError
from aligned_llm.testing import save_tiny_lora
from tests.faults import ADAPTER_FAULTS, MODEL_FAULTS, ask_to_run_code

STACK_UNDERFLOW = b"\x80\x02aR2h\x000"
"""A pickle that makes torch's weights-only unpickler raise a raw ``IndexError`` (pop from an empty stack)."""
LEGACY_HEADER = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)
"""How a legacy ``torch.save`` file starts: past it, a file is only found broken while its tensors are read."""


def zip_checkpoint(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def model_copy(tiny_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_dir, tmp_path / "model"))


GARBAGE_PICKLES: dict[str, tuple[bytes, bool]] = {
    "issue 23's bytes": (b"\x80\x02garbage" * 100, True),
    "empty": (b"", True),
    "text": (b"hello world", True),
    "a bare pickle stack underflow": (STACK_UNDERFLOW, True),
    "a zip without data.pkl": (zip_checkpoint({"archive/readme.txt": b"hi"}), True),
    "a truncated zip": (zip_checkpoint({"archive/data.pkl": b"x" * 4000})[:3000], True),
    "a legacy header, then a stack underflow": (LEGACY_HEADER + STACK_UNDERFLOW, False),
    "a zip whose data.pkl underflows": (zip_checkpoint({"archive/data.pkl": STACK_UNDERFLOW}), False),
}
"""Garbage ``pytorch_model.bin`` contents, and whether the header check refuses them before transformers runs."""


@pytest.mark.parametrize("fault", sorted(GARBAGE_PICKLES))
def test_a_garbage_pytorch_model_bin_is_named(model_copy, fault, monkeypatch):
    """Whatever torch's unpickler would raise, the error is ModelLoadError naming the file; a bad header is
    refused before transformers builds any model."""
    content, refused_by_header = GARBAGE_PICKLES[fault]
    (model_copy / "model.safetensors").unlink()
    (model_copy / "pytorch_model.bin").write_bytes(content)
    built = []
    original = AutoModelForCausalLM.from_pretrained.__func__
    monkeypatch.setattr(
        AutoModelForCausalLM, "from_pretrained",
        classmethod(lambda cls, *args, **kwargs: built.append(args) or original(cls, *args, **kwargs)),
    )  # fmt: skip
    with pytest.raises(ModelLoadError) as raised:
        AlignedLLM.from_pretrained(model_copy, device="cpu")
    assert Path(raised.value.path) == model_copy / "pytorch_model.bin"
    assert str(model_copy / "pytorch_model.bin") in str(raised.value)
    assert (not built) == refused_by_header


def test_a_garbage_pytorch_model_bin_beside_safetensors_is_not_read(model_copy):
    """transformers reads model.safetensors when both exist, so the unused .bin does not stop the load."""
    (model_copy / "pytorch_model.bin").write_bytes(b"\x80\x02garbage" * 100)
    llm = AlignedLLM.from_pretrained(model_copy, device="cpu")
    assert llm.generate("Hi", max_new_tokens=2).output_tokens == 2


@pytest.mark.parametrize("fault", sorted(MODEL_FAULTS))
def test_a_broken_model_file_is_named(model_copy, fault):
    file, corrupt = MODEL_FAULTS[fault]
    corrupt(model_copy)
    with pytest.raises(ModelLoadError) as raised:
        AlignedLLM.from_pretrained(model_copy, device="cpu")
    assert Path(raised.value.path) == model_copy / file
    assert isinstance(raised.value, ModelPathError), "code catching ModelPathError keeps working"
    assert file in str(raised.value) and raised.value.problem


@pytest.fixture
def adapter_copy(tiny_adapter_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_adapter_dir, tmp_path / "adapter"))


@pytest.mark.parametrize("fault", sorted(ADAPTER_FAULTS))
def test_a_broken_adapter_is_named(tiny_dir, adapter_copy, fault):
    file, corrupt = ADAPTER_FAULTS[fault]
    corrupt(adapter_copy)
    with pytest.raises(ModelLoadError) as raised:
        AlignedLLM.from_pretrained(tiny_dir, adapter=adapter_copy, device="cpu")
    assert Path(raised.value.path) == (adapter_copy / file if file else adapter_copy)


def test_a_lora_for_another_model_shape_is_refused(tiny_dir, tmp_path, tokenizer):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    narrow = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    get_peft_model(LlamaForCausalLM(narrow), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(
        tmp_path / "narrow-lora"
    )
    with pytest.raises(ModelLoadError, match="size mismatch") as raised:
        AlignedLLM.from_pretrained(tiny_dir, adapter=tmp_path / "narrow-lora", device="cpu")
    assert Path(raised.value.path) == tmp_path / "narrow-lora" / "adapter_model.safetensors"
    assert "base model" in str(raised.value)


def test_a_reward_adapter_for_another_shape_is_refused(tiny_dir, tmp_path, tokenizer):
    save_tiny_lora(tmp_path / "lora", seed=1, vocab_size=len(tokenizer))
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    config["target_modules"] = ["no_such_module"]
    (tmp_path / "lora" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as raised:
        AlignedLLM.from_pretrained(tiny_dir, reward_model=tmp_path / "lora", device="cpu")
    assert raised.value.path.endswith("adapter_model.safetensors")


VALUE_HEAD_FAULTS = {
    "garbage value_head.safetensors": ("value_head.safetensors", b"garbage"),
    "garbage value_head.bin": ("value_head.bin", b"\x80\x02garbage" * 30),
    "value_head.bin torch's unpickler fails on": ("value_head.bin", LEGACY_HEADER + STACK_UNDERFLOW),
}


@pytest.mark.parametrize("fault", sorted(VALUE_HEAD_FAULTS))
def test_a_broken_value_head_is_named(tiny_dir, model_copy, fault):
    name, content = VALUE_HEAD_FAULTS[fault]
    (model_copy / name).write_bytes(content)
    with pytest.raises(ModelLoadError) as raised:
        AlignedLLM.from_pretrained(tiny_dir, reward_model=model_copy, device="cpu")
    assert Path(raised.value.path) == model_copy / name


def test_a_value_head_of_the_wrong_shape_is_named(tiny_dir, model_copy):
    save_file({"weight": torch.zeros(3, 3)}, str(model_copy / "value_head.safetensors"))
    with pytest.raises(ModelLoadError, match=r"Linear\(64, 64\)") as raised:
        AlignedLLM.from_pretrained(tiny_dir, reward_model=model_copy, device="cpu")
    assert Path(raised.value.path) == model_copy / "value_head.safetensors"


@pytest.mark.parametrize("source", [None, 3, b"/tmp/model", ["a"], "", "   "])
def test_a_model_source_that_is_not_a_path_fails_at_once(source, monkeypatch):
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    with pytest.raises(InvalidSettingError) as raised:
        AlignedLLM.from_pretrained(source)
    assert raised.value.parameter == "name_or_path"


@pytest.mark.parametrize("adapter", [3, b"x"])
def test_an_adapter_that_is_not_a_path_is_named(tiny_dir, adapter):
    with pytest.raises(InvalidSettingError) as raised:
        AlignedLLM.from_pretrained(tiny_dir, adapter=adapter)
    assert raised.value.parameter == "adapter"


@pytest.mark.parametrize("device", ["cpu:99", "cpu:1", "meta", "mps", "cuda:99"])
def test_a_device_that_does_not_exist_is_refused(tiny_dir, device):
    with pytest.raises(InvalidSettingError) as raised:
        AlignedLLM.from_pretrained(tiny_dir, device=device)
    assert raised.value.parameter == "device"
    assert device in str(raised.value) or device.split(":")[0] in str(raised.value)


def test_cpu_zero_is_the_cpu(tiny_dir):
    assert AlignedLLM.from_pretrained(tiny_dir, device="cpu:0").device.type == "cpu"


@pytest.fixture
def remote_code_folder(model_copy) -> Path:
    ask_to_run_code(model_copy)
    return model_copy


def test_a_folder_asking_to_run_its_code_is_refused_without_a_prompt(remote_code_folder, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\ny\ny\n"))
    with pytest.raises(ModelLoadError, match="never runs code from a model folder") as raised:
        AlignedLLM.from_pretrained(remote_code_folder, device="cpu")
    assert Path(raised.value.path) == remote_code_folder / "config.json"
    assert sys.stdin.read() == "y\ny\ny\n", "nothing asked on stdin"
    assert not (remote_code_folder / "code-ran").exists()


def test_transformers_is_told_never_to_trust_remote_code(remote_code_folder, monkeypatch):
    """Even past aligned-llm's own check, transformers refuses the folder's code rather than asking."""
    from aligned_llm import loading

    monkeypatch.setattr(loading, "_check_no_remote_code", lambda folder: None)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(ModelPathError):
        AlignedLLM.from_pretrained(remote_code_folder, device="cpu")
    assert sys.stdin.read() == "y\n"
    assert not (remote_code_folder / "code-ran").exists()
