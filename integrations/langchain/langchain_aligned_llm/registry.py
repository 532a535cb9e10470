"""Models loaded by name, shared within the process: every LangChain object naming the same model shares it.

LangChain builds model objects often (``bind``, ``configurable_fields``, the standard test
suite); loading a model each time would be slow and would multiply memory, so loading is
lazy (first call, not construction) and keyed by everything that decides the loaded weights:
the :class:`~aligned_llm.ModelSpec` that loads it.

The registry keeps at most :func:`max_shared_models` models (least recently used first out),
so per-call ``model=`` values cannot pile models up in memory. An evicted model stays alive
while a call still uses it, and is loaded again when it is named again.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from aligned_llm import AlignedLLM, InvalidSettingError, ModelSpec
from aligned_llm.loading import BUNDLED_NAME

MAX_MODELS_VARIABLE = "LANGCHAIN_ALIGNED_LLM_MAX_MODELS"
DEFAULT_MAX_MODELS = 2
"""Models kept loaded when neither :func:`set_max_shared_models` nor the environment variable says otherwise."""

_loaded: OrderedDict[ModelSpec, AlignedLLM] = OrderedDict()
_loading: dict[ModelSpec, threading.Lock] = {}
_registry = threading.Lock()  # guards the two dicts and the limit only, never held while a model loads
_max_models: int | None = None


def model_spec(model: ModelSpec | str, options: Mapping[str, str] | None = None) -> ModelSpec:
    """The spec that loads ``model``: the bundled model's name (unless a folder of that name exists) is ``None``."""
    if isinstance(model, ModelSpec):
        return model if model.model != BUNDLED_NAME or Path(BUNDLED_NAME).exists() else replace(model, model=None)
    bundled = model == BUNDLED_NAME and not Path(model).exists()
    return ModelSpec(model=None if bundled else model, **dict(options or {}))


def _check_limit(parameter: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidSettingError(parameter, f"must be an integer >= 1 (models kept loaded), got {value!r}")
    return value


def max_shared_models() -> int:
    """How many models loaded by name stay loaded: :func:`set_max_shared_models`, else the environment.

    The environment variable ``LANGCHAIN_ALIGNED_LLM_MAX_MODELS`` sets it for a process; the
    default is ``DEFAULT_MAX_MODELS`` (2).
    """
    if _max_models is not None:
        return _max_models
    value = os.environ.get(MAX_MODELS_VARIABLE)
    if value is None:
        return DEFAULT_MAX_MODELS
    try:
        number = int(value)
    except ValueError:
        number = value
    return _check_limit(MAX_MODELS_VARIABLE, number)


def set_max_shared_models(limit: int | None) -> None:
    """Keep at most ``limit`` models loaded by name (``None``: back to the environment or the default).

    Lowering it evicts the least recently used models at once.
    """
    global _max_models
    checked = None if limit is None else _check_limit("limit", limit)
    with _registry:
        _max_models = checked
        _evict()


def _evict() -> None:
    """Drop the least recently used models beyond the limit (``_registry`` held)."""
    limit = max_shared_models()
    while len(_loaded) > limit:
        _loaded.popitem(last=False)


def shared_llm(model: ModelSpec | str, options: Mapping[str, str] | None = None) -> AlignedLLM:
    """The shared ``AlignedLLM`` a ``ModelSpec`` loads, or ``model`` (a folder, a hub id, the bundled model's name).

    ``options`` (with a name) are ``ModelSpec``'s load options (``device``, ``dtype``,
    ``adapter``, ``reference``, ``reward_model``). ``"SmolLM2-135M-Instruct"`` is the bundled
    model unless a folder of that name exists. Only a hub id that is not a local path can
    reach the network. Concurrent first calls load it once.
    """
    key = model_spec(model, options)
    with _registry:
        if key in _loaded:
            _loaded.move_to_end(key)
            return _loaded[key]
        loading = _loading.setdefault(key, threading.Lock())
    with loading:
        with _registry:
            if key in _loaded:
                _loaded.move_to_end(key)
                return _loaded[key]
        try:
            llm = key.load()
            with _registry:
                _loaded[key] = llm
                _evict()
            return llm
        finally:
            with _registry:
                if _loading.get(key) is loading:
                    del _loading[key]


def loaded_llm(model: ModelSpec | str, options: Mapping[str, str] | None = None) -> AlignedLLM | None:
    """The shared model if it is already loaded, without loading it (or waiting for a load)."""
    with _registry:
        return _loaded.get(model_spec(model, options))
