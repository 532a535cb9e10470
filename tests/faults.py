"""Ways to break a saved model or adapter folder, shared by the loading tests and the bad-input table.

Each fault maps a name to ``(file, corrupt)``: the file the error must name (relative to the
folder; ``""`` is the folder itself) and a function that breaks a copy of the folder in place.
"""

from __future__ import annotations

import json
from pathlib import Path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage_bin(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02garbage, not a checkpoint" * 40)


REMOTE_CODE = '''
from pathlib import Path
Path(__file__).with_name("code-ran").write_text("the folder's code ran")
from transformers import PretrainedConfig
class MysteryConfig(PretrainedConfig):
    model_type = "mystery-lm"
'''


def ask_to_run_code(folder: Path) -> None:
    """Make the folder an unknown model type whose config and tokenizer point at its own Python code."""
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="mystery-lm",
        auto_map={"AutoConfig": "configuration_mystery.MysteryConfig", "AutoModelForCausalLM": "modeling.Mystery"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": ["tokenization_mystery.MysteryTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    for module in ("configuration_mystery.py", "modeling.py", "tokenization_mystery.py"):
        (folder / module).write_text(REMOTE_CODE)


MODEL_FAULTS = {
    "empty safetensors": ("model.safetensors", lambda folder: (folder / "model.safetensors").write_bytes(b"")),
    "truncated safetensors": ("model.safetensors", lambda folder: truncate(folder / "model.safetensors")),
    "garbage pytorch_model.bin": ("pytorch_model.bin", _garbage_bin),
    "garbage config.json": ("config.json", lambda folder: (folder / "config.json").write_text("{model_type: llama")),
    "garbage tokenizer.json": ("tokenizer.json", lambda folder: (folder / "tokenizer.json").write_text("[1, 2")),
    "asks to run its own code": ("config.json", ask_to_run_code),
}

ADAPTER_FAULTS = {
    "garbage adapter_config.json": (
        "adapter_config.json",
        lambda folder: (folder / "adapter_config.json").write_text("not json at all"),
    ),
    "adapter_config.json not an object": (
        "adapter_config.json",
        lambda folder: (folder / "adapter_config.json").write_text("[1, 2, 3]"),
    ),
    "adapter_config.json without peft_type": (
        "adapter_config.json",
        lambda folder: (folder / "adapter_config.json").write_text('{"r": 8}'),
    ),
    "adapter without weights": ("", lambda folder: (folder / "adapter_model.safetensors").unlink()),
    "truncated adapter weights": (
        "adapter_model.safetensors",
        lambda folder: truncate(folder / "adapter_model.safetensors"),
    ),
}
