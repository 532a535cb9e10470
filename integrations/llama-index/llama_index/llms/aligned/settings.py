"""Decoding settings of ``AlignedHF``: their names, per-call overrides, and checking by the core.

``None`` means "the library's default", so only the settings that were given reach
``AlignedLLM.generate``/``stream``. The core's ``DecodeSettings`` is the single judge of
what is valid; a setting the installed core does not know yet is refused by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from aligned_llm import AlignedLLM, DecodeSettings, InvalidSettingError
from llama_index.core.bridge.pydantic import ValidationError

DECODE_SETTINGS = (
    "method",
    "principle",
    "profile",
    "beta",
    "opad_window",
    "rho",
    "k",
    "pad_base",
    "alpha",
    "max_new_tokens",
    "stop",
    "temperature",
    "top_p",
    "seed",
)
"""Settings forwarded to the core when not ``None``."""

SETTINGS = (*DECODE_SETTINGS, "trace")
"""Every setting: a field of ``AlignedHF`` and a per-call keyword of ``complete``/``chat``."""

_PROBE_TEXT = "."
_SYSTEM_PROBE = [{"role": "system", "content": _PROBE_TEXT}, {"role": "user", "content": _PROBE_TEXT}]
_USER_PROBE = [{"role": "user", "content": _PROBE_TEXT}]


def merge_overrides(settings: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The instance's settings with per-call ``overrides`` applied; unknown names are refused."""
    for name in overrides:
        if name not in SETTINGS:
            raise InvalidSettingError(name, f"is not a setting of AlignedHF; the settings are {', '.join(SETTINGS)}")
    return {**settings, **overrides}


def core_kwargs(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments for ``generate``/``stream``, checked by the core's ``DecodeSettings``."""
    trace = settings.get("trace", False)
    if not isinstance(trace, bool):
        raise InvalidSettingError("trace", f"must be True or False, got {trace!r}")
    given = {name: settings[name] for name in DECODE_SETTINGS if settings.get(name) is not None}
    known = {field.name for field in dataclasses.fields(DecodeSettings) if field.init}
    for name in given:
        if name not in known:
            raise InvalidSettingError(name, "is not supported by the installed aligned-llm; upgrade aligned-llm")
    DecodeSettings(**given)
    return {**given, "trace": trace} if trace else given


def reserved_tokens(core: AlignedLLM, settings: Mapping[str, Any]) -> int:
    """Prompt tokens LlamaIndex does not see: the chat template's markup and the guidance.

    LlamaIndex packs retrieved context up to the context window it is told, counting only the
    messages' text; the core adds the template's markup and renders the principle or profile
    into the prompt. Measured on a system + user conversation (what query and chat engines
    send), so that many tokens are kept free. Also checks the settings against this model
    (e.g. a method that needs a model it lacks).
    """
    given = {name: value for name, value in core_kwargs(settings).items() if name != "trace"}
    probe = _SYSTEM_PROBE if core.chat_format.supports_system else _USER_PROBE
    rows = core.encode_rows(probe, DecodeSettings(**given))
    text_tokens = len(probe) * len(core.tokenizer.encode(_PROBE_TEXT, add_special_tokens=False))
    return max(len(ids) for ids in rows) - text_tokens


def setting_error(error: ValidationError) -> InvalidSettingError:
    """A field's type error from pydantic as the core's error, naming the setting."""
    first = error.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else "settings"
    return InvalidSettingError(name, f"{first['msg']}, got {first.get('input')!r}")
