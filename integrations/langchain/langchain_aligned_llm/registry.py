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

_loaded: dict[tuple[str, tuple[tuple[str, str], ...]], AlignedLLM] = {}
_loading = threading.Lock()


def shared_llm(model: str, options: Mapping[str, str] | None = None) -> AlignedLLM:
    """The process-wide ``AlignedLLM`` for ``model`` (a local folder, a hub id, or the bundled model's name).

    ``options`` are ``AlignedLLM.from_pretrained`` keywords (``device``, ``dtype``,
    ``adapter``, ``reference``, ``reward_model``). ``"SmolLM2-135M-Instruct"`` is the bundled
    model unless a folder of that name exists. Only a hub id that is not a local path can
    reach the network.
    """
    options = dict(options or {})
    key = (model, tuple(sorted(options.items())))
    with _loading:
        llm = _loaded.get(key)
        if llm is None:
            if model == BUNDLED_NAME and not Path(model).exists():
                llm = AlignedLLM.default(**options)
            else:
                llm = AlignedLLM.from_pretrained(model, **options)
            _loaded[key] = llm
        return llm


def loaded_llm(model: str, options: Mapping[str, str] | None = None) -> AlignedLLM | None:
    """The shared model if it is already loaded, without loading it."""
    with _loading:
        return _loaded.get((model, tuple(sorted(dict(options or {}).items()))))
