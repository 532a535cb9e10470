"""Decoding settings shared by the chat model and the text LLM: fields, per-call overrides, model resolution.

Every setting of the core's registry (``aligned_llm.setting_names()``: the common settings and
every registered method's parameters) is a field (``None`` = the library's default) and a
per-call keyword argument (``invoke(..., principle=...)``, ``bind(...)``,
``configurable_fields``); a per-call value, even ``None``, replaces the field. Fields are typed
from the registry (``aligned_llm.registry.setting_fields``: type, range, help) and checked by
the core. Only settings that are not ``None`` reach the core, so the library's own defaults
apply otherwise. Fields for methods registered later are added when they register. Unknown
per-call keywords are refused by name, as in the core. The load options (``device``,
``adapter``, …) are ``ModelSpec``'s fields, and a ``ModelSpec`` keys the shared models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aligned_llm import AlignedLLM, InvalidSettingError, ModelSpec, setting_names
from aligned_llm.loading import BUNDLED_NAME
from aligned_llm.registry import setting_fields
from aligned_llm.typed_fields import SchemaOfSettings, add_setting_fields, keep_setting_fields, setting_field
from pydantic import ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo

from langchain_aligned_llm.decode_call import PROVIDER, DecodeCall
from langchain_aligned_llm.registry import loaded_llm, model_spec, shared_llm

RENAMED: dict[str, str] = {"profile": "user_profile", "max_new_tokens": "max_tokens"}
"""Core setting → LangChain field, where LangChain has its own name (``profile`` is a chat-model field there)."""
PER_CALL_ALIASES: dict[str, str] = {core: langchain for core, langchain in RENAMED.items()}
"""Per-call spellings that mean a setting: the core's names are accepted too."""
SEPARATE = ("stop",)
"""Settings with their own handling: field and per-call ``stop`` strings are joined."""
LANGCHAIN_KEYWORDS = frozenset({"model", "stream", "ls_structured_output_format", "structured_output_format"})
"""Per-call keywords that LangChain itself (or this integration) passes besides the settings."""
# accepted at construction for drop-in compatibility with hosted models; meaningless for a local model
IGNORED_INIT_PARAMS = ("api_key", "timeout", "max_retries")
LOAD_OPTIONS = ModelSpec.options()
"""Fields that decide what a model name loads: ``ModelSpec``'s, besides ``model``."""
FIELD_HELP = {"trace": "per-token trace in response_metadata['trace']"}


def settings_map() -> dict[str, str]:
    """LangChain field name → keyword of ``AlignedLLM.generate``/``stream``, for every registered setting."""
    return {RENAMED.get(name, name): name for name in setting_names() if name not in SEPARATE}


def decoding_fields() -> dict[str, tuple[Any, FieldInfo]]:
    """A typed field per registry setting, by LangChain name (``None``: the library's default; ``trace`` off)."""
    return {
        RENAMED.get(name, name): setting_field(
            declaration, default=False if name == "trace" else None, description=FIELD_HELP.get(name)
        )
        for name, declaration in setting_fields().items()
        if name not in SEPARATE
    }


def load_option_fields() -> dict[str, tuple[Any, FieldInfo]]:
    """A field per load option, from ``ModelSpec`` (a model named by ``model`` is loaded with them)."""
    return {name: (str | None, FieldInfo(default=None, description=ModelSpec.help(name))) for name in LOAD_OPTIONS}


class AlignedLLMParams(SchemaOfSettings):
    """Model and decoding fields of ``ChatAlignedLLM`` and ``AlignedLLMText``.

    The decoding fields are added from the core's setting registry (:func:`decoding_fields`),
    the load options from ``ModelSpec`` (:func:`load_option_fields`).
    """

    # concrete classes repeat extra="forbid": LangChain's base classes, listed after this one, set extra="ignore"
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    llm: AlignedLLM | None = Field(default=None, exclude=True)
    """A loaded ``AlignedLLM`` to use; when given, nothing is loaded (and nothing touches the network)."""
    model: str | None = None
    """Local folder or hub id, loaded on first use and shared by every object naming it (default: the bundled
    SmolLM2-135M-Instruct); with ``llm``, just its display name (default ``llm.name``)."""
    stop: list[str] | None = None
    """Stop strings; joined with per-call ``stop``. The first match ends the text and is cut from it."""
    max_batch_size: int = Field(default=32, ge=1)
    """Most prompts the text LLM decodes in one engine batch (LangChain hands it a batch's prompts together);
    the chat model's concurrent calls share the model's running batch instead."""

    @model_validator(mode="before")
    @classmethod
    def _drop_remote_only_params(cls, values: Any) -> Any:
        if isinstance(values, Mapping):
            return {name: value for name, value in values.items() if name not in IGNORED_INIT_PARAMS}
        return values

    @model_validator(mode="after")
    def _name_the_model(self) -> AlignedLLMParams:
        if self.model is None:
            self.model = self.llm.name if self.llm is not None else BUNDLED_NAME
        return self

    @model_validator(mode="after")
    def _check_answer_fits(self) -> AlignedLLMParams:
        """With the model in memory, a ``max_tokens`` that leaves no room for any prompt is refused at once.

        A model named but not loaded yet is not loaded for this: each call's prompt + ``max_tokens``
        is checked against the context window by the core, before any forward.
        """
        llm = self._loaded_llm()
        max_tokens = getattr(self, "max_tokens", None)
        if llm is not None and isinstance(max_tokens, int) and max_tokens >= llm.context_window:
            raise InvalidSettingError(
                "max_tokens",
                f"must be below the model's context window of {llm.context_window} tokens (the prompt needs at "
                f"least one), got {max_tokens}",
            )
        return self

    @property
    def model_name(self) -> str:
        """Name of the model this object decodes with."""
        return self.model or (self.llm.name if self.llm is not None else BUNDLED_NAME)

    def _aligned_identifying_params(self) -> dict[str, Any]:
        """Everything that changes the output: LangChain's cache key and tracing are built from it."""
        params: dict[str, Any] = {"model": self.model_name}
        params.update({name: getattr(self, name, None) for name in LOAD_OPTIONS})
        params.update({name: getattr(self, name, None) for name in settings_map()})
        # not "stop": LangChain overwrites that key with the per-call stop, which would drop the field from the key
        params["configured_stop"] = self.stop
        return params

    @property
    def aligned_llm(self) -> AlignedLLM:
        """The core model this object decodes with (loaded on first use and shared by name)."""
        return self._resolve_llm()

    def _loaded_llm(self) -> AlignedLLM | None:
        """The model if it is already in memory (never loads)."""
        return self.llm or loaded_llm(self._spec(self.model_name))

    def _resolve_llm(self, model: object = None) -> AlignedLLM:
        """The model for a call: this object's, or a per-call ``model=`` override loaded and shared by name."""
        if model is not None and not isinstance(model, str):
            raise ValueError(f"model: must be a model name or path, got {model!r}")
        if model is None or model == self.model_name:
            if self.llm is not None:
                return self.llm
            model = self.model_name
        return shared_llm(self._spec(model))

    def _spec(self, model: str) -> ModelSpec:
        """What ``model`` (this object's or a per-call override) loads, with this object's load options."""
        return model_spec(
            model, {name: getattr(self, name) for name in LOAD_OPTIONS if getattr(self, name) is not None}
        )

    def _effective_settings(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Field values with per-call overrides applied, by LangChain name; unknown keywords are refused."""
        fields = settings_map()
        overrides = dict(overrides)
        for alias, name in PER_CALL_ALIASES.items():
            if alias in overrides:
                value = overrides.pop(alias)
                if name in overrides and overrides[name] != value:
                    raise InvalidSettingError(alias, f"{alias} and {name} name the same setting; give one of them")
                overrides[name] = value
        for name in overrides:
            if name not in fields and name not in LANGCHAIN_KEYWORDS and name not in SEPARATE:
                valid = ", ".join([*fields, *SEPARATE, "model"])
                raise InvalidSettingError(name, f"is not a setting of this model; the settings are {valid}")
        values = {name: getattr(self, name, None) for name in fields}
        values.update({name: overrides[name] for name in fields if name in overrides})
        return values

    def _stop_strings(self, stop: list[str] | str | None) -> list[str]:
        """The field's stop strings and the call's, without duplicates."""
        per_call = [stop] if isinstance(stop, str) else list(stop or [])
        return list(dict.fromkeys([*(self.stop or []), *per_call]))

    def _core_call(self, stop: list[str] | str | None, overrides: Mapping[str, Any]) -> DecodeCall:
        """Resolve the model and the core's keyword arguments for one call (unknown keywords are refused)."""
        values = self._effective_settings(overrides)
        fields = settings_map()
        settings = {fields[name]: value for name, value in values.items() if value is not None}
        stops = self._stop_strings(stop)
        if stops:
            settings["stop"] = stops
        return DecodeCall(self._resolve_llm(overrides.get("model")), settings)

    def _aligned_ls_params(self, stop: list[str] | str | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """LangSmith's standard parameters, honouring per-call overrides (``model`` included)."""
        values = self._effective_settings(overrides)
        model = overrides.get("model")
        params: dict[str, Any] = {
            "ls_provider": PROVIDER,
            "ls_model_name": model if isinstance(model, str) else self.model_name,
        }
        if isinstance(values["temperature"], (int, float)):
            params["ls_temperature"] = values["temperature"]
        if isinstance(values["max_tokens"], int):
            params["ls_max_tokens"] = values["max_tokens"]
        stops = self._stop_strings(stop)
        if stops:
            params["ls_stop"] = stops
        return params


add_setting_fields(AlignedLLMParams, load_option_fields)
keep_setting_fields(AlignedLLMParams, decoding_fields)
