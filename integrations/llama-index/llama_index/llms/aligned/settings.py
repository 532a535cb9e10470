"""Decoding settings of ``AlignedHF``: their names, per-call overrides, and checking by the core.

Every setting of the core's registry (``aligned_llm.setting_names()``: the common settings and
every registered method's parameters) is a field of ``AlignedHF``, typed from the registry
(``aligned_llm.registry.setting_fields``), and a per-call keyword; fields for methods
registered later are added when they register. ``None`` means "the library's default", so only
the settings that were given reach ``AlignedLLM.generate``/``stream``. The core is the single
judge of what is valid: a field is checked by it as it is set, a call's settings once, by the
core's ``generate``/``stream`` before any forward.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aligned_llm import AlignedLLM, DecodeSettings, InvalidSettingError, setting_names
from aligned_llm.common_settings import DEFAULT_MAX_NEW_TOKENS
from aligned_llm.registry import setting_fields
from aligned_llm.typed_fields import setting_field
from llama_index.core.bridge.pydantic import ValidationError
from pydantic.fields import FieldInfo

FIELD_DEFAULTS: dict[str, Any] = {"method": "vanilla", "max_new_tokens": DEFAULT_MAX_NEW_TOKENS, "trace": False}
"""Settings whose field holds a value rather than ``None`` (the library's default) when not given."""


def settings_names() -> tuple[str, ...]:
    """Every setting: a field of ``AlignedHF`` and a per-call keyword of ``complete``/``chat``."""
    return tuple(setting_names())


def decoding_fields() -> dict[str, tuple[Any, FieldInfo]]:
    """A typed field per registry setting (``None``: the library's default, except ``FIELD_DEFAULTS``)."""
    return {
        name: setting_field(declaration, default=FIELD_DEFAULTS.get(name))
        for name, declaration in setting_fields().items()
    }


_PROBE_TEXT = "."
_SYSTEM_PROBE = [{"role": "system", "content": _PROBE_TEXT}, {"role": "user", "content": _PROBE_TEXT}]
_USER_PROBE = [{"role": "user", "content": _PROBE_TEXT}]


def merge_overrides(settings: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The instance's settings with per-call ``overrides`` applied; unknown names are refused."""
    names = settings_names()
    for name in overrides:
        if name not in names:
            raise InvalidSettingError(name, f"is not a setting of AlignedHF; the settings are {', '.join(names)}")
    return {**settings, **overrides}


def core_kwargs(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments for ``generate``/``stream``: the settings given (the core checks them, once)."""
    given = {name: value for name, value in settings.items() if value is not None}
    if given.get("trace") is False:
        del given["trace"]
    return given


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


def check_answer_fits(max_new_tokens: int, window: int, reserved: int) -> None:
    """Refuse a ``max_new_tokens`` that leaves no room for a prompt in ``window`` (``reserved``: the markup's).

    The core checks each call's prompt + ``max_new_tokens`` against the window; this refuses on
    construction (and assignment) a value no prompt could ever fit with, such as ``10**9``.
    """
    room = window - reserved - 1
    if max_new_tokens > room:
        raise InvalidSettingError(
            "max_new_tokens",
            f"must be at most {room}: the context window is {window} tokens, the chat template and guidance take "
            f"{reserved} and the prompt needs at least one; got {max_new_tokens}",
        )


def setting_error(error: ValidationError) -> InvalidSettingError:
    """A field's error as the core's: the core's own when it refused the value, else pydantic's, naming the field."""
    first = error.errors()[0]
    refused = first.get("ctx", {}).get("error")
    if isinstance(refused, InvalidSettingError):
        return refused
    name = str(first["loc"][0]) if first["loc"] else "settings"
    return InvalidSettingError(name, f"{first['msg']}, got {first.get('input')!r}")
