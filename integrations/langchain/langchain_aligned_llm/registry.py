"""Models loaded by name, once per process: every LangChain object naming the same model shares it.

LangChain builds model objects often (``bind``, ``configurable_fields``, the standard test
suite); loading a model each time would be slow and would multiply memory, so loading is
lazy (first call, not construction) and keyed by everything that decides the loaded weights.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from aligned_llm import AlignedLLM
from aligned_llm.loading import BUNDLED_NAME

_Key = tuple[str, tuple[tuple[str, str], ...]]
_loaded: dict[_Key, AlignedLLM] = {}
_loading: dict[_Key, threading.Lock] = {}
_registry = threading.Lock()  # guards the two dicts only, never held while a model loads


def _key(model: str, options: Mapping[str, str] | None) -> _Key:
    return model, tuple(sorted(dict(options or {}).items()))


def shared_llm(model: str, options: Mapping[str, str] | None = None) -> AlignedLLM:
    """The process-wide ``AlignedLLM`` for ``model`` (a local folder, a hub id, or the bundled model's name).

    ``options`` are ``AlignedLLM.from_pretrained`` keywords (``device``, ``dtype``,
    ``adapter``, ``reference``, ``reward_model``). ``"SmolLM2-135M-Instruct"`` is the bundled
    model unless a folder of that name exists. Only a hub id that is not a local path can
    reach the network. Concurrent first calls load it once.
    """
    key = _key(model, options)
    with _registry:
        if key in _loaded:
            return _loaded[key]
        loading = _loading.setdefault(key, threading.Lock())
    with loading:
        with _registry:
            if key in _loaded:
                return _loaded[key]
        kwargs = dict(key[1])
        if model == BUNDLED_NAME and not Path(model).exists():
            llm = AlignedLLM.default(**kwargs)
        else:
            llm = AlignedLLM.from_pretrained(model, **kwargs)
        with _registry:
            _loaded[key] = llm
        return llm


def loaded_llm(model: str, options: Mapping[str, str] | None = None) -> AlignedLLM | None:
    """The shared model if it is already loaded, without loading it (or waiting for a load)."""
    with _registry:
        return _loaded.get(_key(model, options))
