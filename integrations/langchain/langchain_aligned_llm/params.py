"""Decoding settings shared by the chat model and the text LLM: fields, per-call overrides, model resolution.

Every setting is a field (``None`` = the library's default) and a per-call keyword argument
(``invoke(..., principle=...)``, ``bind(...)``, ``configurable_fields``); a per-call value,
even ``None``, replaces the field. Only settings that are not ``None`` reach the core, so
the library's own defaults apply otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aligned_llm import AlignedLLM, DecodingMethod
from aligned_llm.loading import BUNDLED_NAME
from pydantic import BaseModel, ConfigDict, Field, model_validator

from langchain_aligned_llm.core_call import PROVIDER, CoreCall
from langchain_aligned_llm.registry import loaded_llm, shared_llm

# LangChain name -> keyword of AlignedLLM.generate / AlignedLLM.stream
SETTINGS: dict[str, str] = {
    "method": "method",
    "principle": "principle",
    "user_profile": "profile",
    "beta": "beta",
    "k": "k",
    "pad_base": "pad_base",
    "alpha": "alpha",
    "opad_window": "opad_window",
    "rho": "rho",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "max_tokens": "max_new_tokens",
    "trace": "trace",
}
# per-call spellings that mean a setting: the core's names
PER_CALL_ALIASES: dict[str, str] = {"profile": "user_profile", "max_new_tokens": "max_tokens"}
# accepted at construction for drop-in compatibility with hosted models; meaningless for a local model
IGNORED_INIT_PARAMS = ("api_key", "timeout", "max_retries")
# fields that decide what a model name loads
LOAD_OPTIONS = ("device", "dtype", "adapter", "reference", "reward_model")


class AlignedLLMParams(BaseModel):
    """Model and decoding fields of ``ChatAlignedLLM`` and ``AlignedLLMText``."""

    # concrete classes repeat extra="forbid": LangChain's base classes, listed after this one, set extra="ignore"
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    llm: AlignedLLM | None = Field(default=None, exclude=True)
    """A loaded ``AlignedLLM`` to use; when given, nothing is loaded (and nothing touches the network)."""
    model: str | None = None
    """Local folder or hub id, loaded on first use and shared by every object naming it (default: the bundled
    SmolLM2-135M-Instruct); with ``llm``, just its display name (default ``llm.name``)."""
    device: str | None = None
    """Device for a model loaded by name (default: CUDA when available, else CPU)."""
    dtype: str | None = None
    """dtype for a model loaded by name (default: bf16 on CUDA, fp32 on CPU)."""
    adapter: str | None = None
    """LoRA folder loaded on top of ``model`` (for AAD: the DPO side; ``"bundled"`` with the default model)."""
    reference: str | None = None
    """SFT model of a DPO ``model``, for two-model AAD."""
    reward_model: str | None = None
    """PAD's reward model (PersRM): a model folder or a LoRA folder on ``model``."""

    method: str | DecodingMethod | None = None
    """Decoding method: a name the core knows (``"vanilla"``, ``"opad"``, ``"linear"``, …) or a ``DecodingMethod``."""
    principle: str | None = None
    """The principle to align to (rendered into the guided context)."""
    user_profile: str | dict[str, float] | None = None
    """User profile (text or ``{dimension: weight}``); per call it is ``profile=`` (``profile`` is LangChain's
    model-capabilities field on chat models)."""
    beta: float | None = None
    """Alignment strength of OPAD (larger = weaker) / reward weight of PAD."""
    k: int | None = None
    """Candidate tokens scored per step (PAD)."""
    pad_base: str | None = None
    """Which context PAD's candidates come from."""
    alpha: float | None = None
    """Strength of AAD."""
    opad_window: str | int | None = None
    """OPAD's window: ``"reference"``, ``"last"`` or ``1``."""
    rho: float | None = None
    """Strength of the linear baseline."""
    temperature: float | None = None
    """0 = greedy; otherwise sampling."""
    top_p: float | None = None
    """Nucleus for sampling."""
    seed: int | None = None
    """Seed for repeatable sampling."""
    max_tokens: int | None = None
    """Most tokens to generate (the core's ``max_new_tokens``)."""
    stop: list[str] | None = None
    """Stop strings; joined with per-call ``stop``. The first match ends the text and is cut from it."""
    trace: bool = False
    """Record per-token log-probs, scores and signals in ``response_metadata["trace"]``."""
    max_batch_size: int = Field(default=32, ge=1)
    """Most prompts decoded in one engine batch by ``batch()``."""

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

    @property
    def model_name(self) -> str:
        """Name of the model this object decodes with."""
        return self.model or (self.llm.name if self.llm is not None else BUNDLED_NAME)

    def _aligned_identifying_params(self) -> dict[str, Any]:
        """Everything that changes the output: LangChain's cache key and tracing are built from it."""
        params: dict[str, Any] = {"model": self.model_name}
        params.update({name: getattr(self, name) for name in LOAD_OPTIONS})
        params.update({name: getattr(self, name) for name in SETTINGS})
        # not "stop": LangChain overwrites that key with the per-call stop, which would drop the field from the key
        params["configured_stop"] = self.stop
        return params

    def _loaded_llm(self) -> AlignedLLM | None:
        """The model if it is already in memory (never loads)."""
        return self.llm or loaded_llm(self.model_name, self._load_options())

    def _resolve_llm(self, model: object = None) -> AlignedLLM:
        """The model for a call: this object's, or a per-call ``model=`` override loaded and shared by name."""
        if model is not None and not isinstance(model, str):
            raise ValueError(f"model: must be a model name or path, got {model!r}")
        if model is None or model == self.model_name:
            if self.llm is not None:
                return self.llm
            model = self.model_name
        return shared_llm(model, self._load_options())

    def _load_options(self) -> dict[str, str]:
        """Keyword arguments of ``AlignedLLM.from_pretrained`` for a model loaded by name."""
        return {name: getattr(self, name) for name in LOAD_OPTIONS if getattr(self, name) is not None}

    def _effective_settings(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Field values with per-call overrides applied, by LangChain name."""
        overrides = dict(overrides)
        for alias, name in PER_CALL_ALIASES.items():
            if alias in overrides:
                value = overrides.pop(alias)
                if name in overrides and overrides[name] != value:
                    raise ValueError(f"{alias} and {name} name the same setting; give one of them")
                overrides[name] = value
        values = {name: getattr(self, name) for name in SETTINGS}
        values.update({name: overrides[name] for name in SETTINGS if name in overrides})
        return values

    def _stop_strings(self, stop: list[str] | str | None) -> list[str]:
        """The field's stop strings and the call's, without duplicates."""
        per_call = [stop] if isinstance(stop, str) else list(stop or [])
        return list(dict.fromkeys([*(self.stop or []), *per_call]))

    def _core_call(self, stop: list[str] | str | None, overrides: Mapping[str, Any]) -> CoreCall:
        """Resolve the model and the core's keyword arguments for one call (unknown keywords are ignored)."""
        values = self._effective_settings(overrides)
        settings = {SETTINGS[name]: value for name, value in values.items() if value is not None}
        stops = self._stop_strings(stop)
        if stops:
            settings["stop"] = stops
        return CoreCall(self._resolve_llm(overrides.get("model")), settings)

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
