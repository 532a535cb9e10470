"""Decoding settings: fields and per-call overrides reach the engine, and every one of them is in the cache key."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from aligned_llm import ModelPathError, ModelSpec, PromptTooLongError
from langchain_core.caches import InMemoryCache
from langchain_core.runnables import ConfigurableField
from pydantic import ValidationError

from langchain_aligned_llm import AlignedLLMText, ChatAlignedLLM
from langchain_aligned_llm.registry import loaded_llm, shared_llm

PRINCIPLE = "Answer like a pirate."


@pytest.fixture
def chat(tiny_model_dir) -> ChatAlignedLLM:
    return ChatAlignedLLM(model=tiny_model_dir, device="cpu", max_tokens=6)


def test_fields_reach_the_engine_and_unset_ones_stay_library_defaults(tiny_model_dir, spy):
    chat = ChatAlignedLLM(
        model=tiny_model_dir, device="cpu", method="opad", principle=PRINCIPLE, beta=2.0, max_tokens=5, stop=["\n\n"]
    )
    chat.invoke("Hello")
    (call,) = spy.calls
    assert call.settings == {
        "method": "opad",
        "principle": PRINCIPLE,
        "beta": 2.0,
        "max_new_tokens": 5,
        "stop": ["\n\n"],
        "trace": False,
    }


def test_per_call_settings_override_fields(tiny_model_dir, spy):
    chat = ChatAlignedLLM(model=tiny_model_dir, device="cpu", principle="Be formal.", beta=1.0, max_tokens=6)
    chat.invoke("Hello", method="opad", principle=PRINCIPLE, beta=3.0, max_tokens=4)
    settings = spy.calls[-1].settings
    assert (settings["method"], settings["principle"], settings["beta"], settings["max_new_tokens"]) == (
        "opad",
        PRINCIPLE,
        3.0,
        4,
    )
    chat.invoke("Hello", principle=None)
    assert "principle" not in spy.calls[-1].settings


def test_bind_and_configurable_fields_reach_the_engine(chat, spy):
    chat.bind(method="opad", principle=PRINCIPLE, beta=2.5).invoke("Hello")
    assert spy.calls[-1].settings | {"method": "opad", "principle": PRINCIPLE, "beta": 2.5} == spy.calls[-1].settings
    configurable = chat.configurable_fields(
        principle=ConfigurableField(id="principle"), beta=ConfigurableField(id="beta")
    )
    configurable.invoke("Hello", config={"configurable": {"principle": "Be brief.", "beta": 4.0}})
    assert (spy.calls[-1].settings["principle"], spy.calls[-1].settings["beta"]) == ("Be brief.", 4.0)


def test_per_call_opad_decodes_exactly_like_the_core(chat, tiny):
    """The trace shows both OPAD rows ran with the per-call beta: token ids and signals match a direct core call."""
    message = chat.invoke("Hello", method="opad", principle=PRINCIPLE, beta=2.0, trace=True)
    expected = tiny.generate("Hello", method="opad", principle=PRINCIPLE, beta=2.0, max_new_tokens=6, trace=True)
    trace = message.response_metadata["trace"]
    assert message.content == expected.text
    assert [token["token_id"] for token in trace] == [token.token_id for token in expected.trace]
    assert [token["signal"] for token in trace] == pytest.approx([token.signal for token in expected.trace])
    assert set(trace[0]["logprobs"]) == {"constrained", "unconstrained"}
    weaker = chat.invoke("Hello", method="opad", principle=PRINCIPLE, beta=8.0, trace=True)
    assert weaker.response_metadata["trace"][0]["signal"] == pytest.approx(trace[0]["signal"] * 2.0 / 8.0)


def test_settings_in_response_metadata(chat):
    message = chat.invoke("Hello", method="opad", principle=PRINCIPLE, beta=3.0)
    metadata = message.response_metadata
    assert metadata["method"] == "opad"
    assert metadata["settings"]["principle"] == PRINCIPLE
    assert metadata["settings"]["beta"] == 3.0
    assert metadata["settings"]["max_new_tokens"] == 6
    assert metadata["finish_reason"] in {"stop", "length"}
    assert "trace" not in metadata


def test_profile_k_alpha_pad_base_are_forwarded(chat, spy):
    configured = chat.model_copy(update={"user_profile": "Likes cats.", "k": 5})
    configured.invoke("Hi", alpha=0.3, pad_base="plain")
    configured.bind(profile={"humor": 1.0}).invoke("Hi")
    first, second = (call.settings for call in spy.calls)
    assert (first["profile"], first["k"], first["alpha"], first["pad_base"]) == ("Likes cats.", 5, 0.3, "plain")
    assert second["profile"] == {"humor": 1.0}


def test_core_spellings_work_per_call_and_conflicts_are_refused(chat, spy):
    chat.invoke("Hello", max_new_tokens=3)
    assert spy.calls[-1].settings["max_new_tokens"] == 3
    with pytest.raises(ValueError, match="profile and user_profile"):
        chat.invoke("Hello", profile="a", user_profile="b")


def test_invalid_settings_fail_before_any_model_work(chat, spy, tiny, monkeypatch):
    steps = []
    monkeypatch.setattr(tiny, "_start", lambda *args, **kwargs: steps.append(args))
    with pytest.raises(ValueError, match="beta"):
        chat.invoke("Hello", method="opad", principle=PRINCIPLE, beta=-1.0)
    assert steps == []


EVERY_SETTING = {
    "method": "opad",
    "principle": PRINCIPLE,
    "user_profile": {"humor": 1.0},
    "beta": 2.0,
    "k": 3,
    "pad_base": "plain",
    "alpha": 0.5,
    "opad_window": "last",
    "rho": 1.0,
    "temperature": 0.7,
    "top_p": 0.9,
    "seed": 1,
    "max_tokens": 9,
    "stop": ["\n"],
    "trace": True,
    "model": "another-model",
    "device": "meta",
    "dtype": "bfloat16",
    "adapter": "/some/lora",
    "reference": "/some/sft",
    "reward_model": "/some/persrm",
}


@pytest.mark.parametrize(("name", "value"), EVERY_SETTING.items(), ids=list(EVERY_SETTING))
def test_every_setting_is_part_of_the_cache_key(tiny_model_dir, name, value):
    fields = {"model": tiny_model_dir, "device": "cpu", "max_tokens": 6}
    base = ChatAlignedLLM(**fields)
    changed = ChatAlignedLLM(**(fields | {name: value}))
    assert changed._get_llm_string() != base._get_llm_string()
    assert changed._identifying_params["configured_stop" if name == "stop" else name] == value
    per_call = {"stop": value} if name == "stop" else {name: value}
    assert base._get_llm_string(**per_call) != base._get_llm_string()


def test_cache_answers_only_calls_with_identical_settings(tiny_model_dir, spy):
    chat = ChatAlignedLLM(
        model=tiny_model_dir, device="cpu", max_tokens=6, method="opad", principle=PRINCIPLE, cache=InMemoryCache()
    )
    first = chat.invoke("Hello", beta=1.0)
    again = chat.invoke("Hello", beta=1.0)
    other = chat.invoke("Hello", beta=5.0)
    assert [call.settings["beta"] for call in spy.calls] == [1.0, 5.0]
    assert again.content == first.content
    assert other.response_metadata["settings"]["beta"] == 5.0


def test_construction_is_cheap_and_models_are_shared(tiny_model_dir, tiny):
    never_loaded = ChatAlignedLLM(model="/no/such/model/folder")
    with pytest.raises(ModelPathError):
        never_loaded.invoke("Hello")
    first = ChatAlignedLLM(model=tiny_model_dir, device="cpu")
    second = AlignedLLMText(model=tiny_model_dir, device="cpu", principle=PRINCIPLE)
    assert first.aligned_llm is second.aligned_llm is tiny is shared_llm(tiny_model_dir, {"device": "cpu"})


def test_a_passed_in_model_is_used_as_is(tiny, spy):
    chat = ChatAlignedLLM(llm=tiny, max_tokens=4)
    assert chat.model == tiny.name
    message = chat.invoke("Hello")
    assert message.response_metadata["model_name"] == tiny.name
    assert len(spy.calls) == 1


def test_per_call_model_override_uses_that_model(chat, other_model_dir):
    other = shared_llm(other_model_dir, {"device": "cpu"})
    message = chat.invoke("Hello", model=other_model_dir)
    assert message.content == other.generate("Hello", max_new_tokens=6).text
    assert message.response_metadata["model_name"] == other.name
    assert chat._get_ls_params(model=other_model_dir)["ls_model_name"] == other_model_dir


def test_unknown_constructor_arguments_are_refused_and_remote_only_ones_ignored(tiny_model_dir):
    with pytest.raises(ValidationError, match="principal"):
        ChatAlignedLLM(model=tiny_model_dir, principal="typo")
    chat = ChatAlignedLLM(model=tiny_model_dir, api_key="unused", timeout=30, max_retries=2)
    assert not hasattr(chat, "api_key")


@pytest.mark.parametrize("make", [ChatAlignedLLM, AlignedLLMText], ids=["chat", "text"])
def test_a_max_tokens_no_prompt_can_fit_is_refused_when_the_model_is_in_memory(make, tiny, tiny_model_dir, spy):
    window = tiny.context_window
    for options in ({"llm": tiny}, {"model": tiny_model_dir, "device": "cpu"}):
        for max_tokens in (10**9, window):
            with pytest.raises(
                ValidationError, match=f"max_tokens: must be below the model's context window of {window}"
            ):
                make(**options, max_tokens=max_tokens)
        assert make(**options, max_tokens=window - 1).max_tokens == window - 1
    assert spy.calls == []


def test_a_max_tokens_for_a_model_not_loaded_yet_is_checked_per_call_before_any_forward(tiny, monkeypatch):
    """Construction stays cheap (nothing is loaded to check); the core refuses the call before any forward."""
    assert ChatAlignedLLM(model="/not/loaded/yet", max_tokens=10**9).max_tokens == 10**9
    forwards = []
    monkeypatch.setattr(tiny.model, "forward", lambda *args, **kwargs: forwards.append(1))
    with pytest.raises(PromptTooLongError, match="max_new_tokens is 1000000000"):
        ChatAlignedLLM(llm=tiny).invoke("Hello", max_tokens=10**9)
    assert forwards == []


def test_langsmith_params_follow_per_call_values(chat):
    params = chat._get_ls_params(stop=["\n"], temperature=0.5, max_tokens=7)
    assert params == {
        "ls_provider": "aligned_llm",
        "ls_model_name": chat.model,
        "ls_model_type": "chat",
        "ls_temperature": 0.5,
        "ls_max_tokens": 7,
        "ls_stop": ["\n"],
    }


def test_model_profile_reports_capabilities_and_context_window(tiny):
    profile = ChatAlignedLLM(llm=tiny).profile
    assert profile["max_input_tokens"] == tiny.context_window
    assert profile["tool_calling"] is profile["structured_output"] is True
    assert profile["text_inputs"] is True


def test_fields_are_typed_from_the_registry():
    """IDEs, ``model_json_schema()`` and ``configurable_fields`` see each setting's type and range."""
    properties = ChatAlignedLLM.model_json_schema()["properties"]
    assert properties["beta"]["anyOf"] == [{"type": "number", "minimum": 0.0}, {"type": "null"}]
    assert properties["k"]["anyOf"] == [{"type": "integer", "minimum": 1}, {"type": "null"}]
    assert properties["alpha"]["anyOf"][0] == {"type": "number", "exclusiveMinimum": 0.0, "maximum": 1.0}
    assert properties["top_p"]["anyOf"][0] == {"type": "number", "exclusiveMinimum": 0.0, "maximum": 1.0}
    assert properties["opad_window"]["anyOf"][0] == {"enum": ["reference", "last", 1]}
    assert "pad: " in properties["k"]["description"]
    assert "llm" not in properties, "the loaded model has no JSON schema: left out, not a failure"
    assert AlignedLLMText.model_json_schema()["properties"]["beta"] == properties["beta"]
    configurable = ChatAlignedLLM().configurable_fields(k=ConfigurableField(id="k")).config_schema()
    assert configurable.model_json_schema()["$defs"]["Configurable"]["properties"]["k"]["anyOf"][0] == {
        "type": "integer", "minimum": 1,
    }  # fmt: skip


def test_a_typed_field_still_holds_the_core_value(tiny_model_dir):
    chat = ChatAlignedLLM(model=tiny_model_dir, device="cpu", beta=2, k=3, stop=("\n",))
    assert (chat.beta, type(chat.beta), chat.k) == (2.0, float, 3)
    with pytest.raises(ValidationError, match="beta: must be"):
        ChatAlignedLLM(model=tiny_model_dir, beta=True)


def test_load_options_are_model_spec_fields_and_key_the_shared_models(tiny_model_dir):
    chat = ChatAlignedLLM(model=tiny_model_dir, device="cpu", dtype="float32")
    assert ModelSpec.options() == ("adapter", "reference", "reward_model", "device", "dtype")
    assert all(name in ChatAlignedLLM.model_fields for name in ModelSpec.options())
    assert ChatAlignedLLM.model_fields["reward_model"].description == ModelSpec.help("reward_model")
    assert chat.aligned_llm is shared_llm(ModelSpec(model=tiny_model_dir, device="cpu", dtype="float32"))


def test_profile_gives_the_window_before_the_model_loads(tiny_model_dir):
    chat = ChatAlignedLLM(model=tiny_model_dir, device="cpu", dtype="float32", reward_model="/not/loaded")
    assert chat.profile["max_input_tokens"] == 256
    assert (chat.profile["tool_calling"], chat.profile["structured_output"]) == (True, True)
    spec = ModelSpec(model=tiny_model_dir, device="cpu", dtype="float32", reward_model="/not/loaded")
    assert loaded_llm(spec) is None, "describing the model loaded nothing"


def test_provider_and_model_name_in_every_answer(chat, tiny_model_dir):
    message = chat.invoke("Hello")
    streamed = list(chat.stream("Hello"))
    for metadata in (message.response_metadata, streamed[-1].response_metadata):
        assert (metadata["model_provider"], metadata["model_name"]) == ("aligned_llm", tiny_model_dir)
    assert streamed[-1].usage_metadata == message.usage_metadata


LATER_METHOD = """
import json
from aligned_llm import Parameter, Vanilla, register_method
from langchain_aligned_llm import AlignedLLMText, ChatAlignedLLM

class SubChat(ChatAlignedLLM):
    pass

class Later(Vanilla):
    name = "later"
    parameters = (Parameter("strength", float, 0.5, "how strong", minimum=0.0, maximum=4.0),)

register_method(Later)
print(json.dumps([
    ChatAlignedLLM.model_json_schema()["properties"]["strength"],
    SubChat(strength=2).strength,
    "strength" in AlignedLLMText.model_fields,
]))
"""


def test_a_method_registered_later_gains_typed_fields_in_every_class():
    """In a fresh interpreter (a registration lasts for the process): the classes, subclasses included, gain it."""
    done = subprocess.run([sys.executable, "-c", LATER_METHOD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    schema, value, in_text_llm = json.loads(done.stdout.strip().splitlines()[-1])
    assert schema["anyOf"] == [{"type": "number", "minimum": 0.0, "maximum": 4.0}, {"type": "null"}]
    assert schema["description"] == "later: how strong (default 0.5)"
    assert (value, in_text_llm) == (2.0, True)
