"""Settings of AlignedHF: checked everywhere, forwarded only when given, and per-query copies that never leak."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from aligned_llm import AlignedLLM, DecodeSettings, InvalidSettingError, ModelSpec
from aligned_llm.testing import count_forwards
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent

from llama_index.llms.aligned import AlignedHF

PROMPT = "Say something about tea."
BAD_VALUES = [
    ("temperature", -1.0),
    ("top_p", 2.0),
    ("max_new_tokens", 0),
    ("method", "nope"),
    ("seed", -3),
    ("stop", [""]),
    ("trace", "yes"),
    ("beta", "2"),
    ("k", 2.5),
    ("principle", 3),
    ("context_window", 10**9),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_bad_values_raise_on_construction_naming_the_setting(tiny_core, name, value):
    with pytest.raises(InvalidSettingError) as error:
        AlignedHF(tiny_core, **{name: value})
    assert error.value.parameter == name


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_bad_values_raise_on_assignment_and_keep_the_old_value(tiny, name, value):
    before = getattr(tiny, name)
    with pytest.raises(InvalidSettingError) as error:
        setattr(tiny, name, value)
    assert error.value.parameter == name
    assert getattr(tiny, name) == before


def test_combinations_are_checked_too(tiny):
    with pytest.raises(InvalidSettingError) as error:
        tiny.method = "opad"
    assert error.value.parameter == "principle", "OPAD contrasts with and without a principle"
    tiny.principle = "Be kind."
    tiny.method = "opad"
    with pytest.raises(InvalidSettingError) as error:
        tiny.beta = -1.0
    assert error.value.parameter == "beta" and tiny.beta is None
    with pytest.raises(InvalidSettingError, match="principle"):
        tiny.with_settings(principle=None)


def test_per_call_values_and_names_are_checked_before_decoding(tiny):
    with pytest.raises(InvalidSettingError) as error:
        tiny.complete(PROMPT, top_p=0)
    assert error.value.parameter == "top_p"
    with pytest.raises(InvalidSettingError, match="not a setting") as error:
        tiny.chat([], principel="typo")
    assert error.value.parameter == "principel"
    with pytest.raises(InvalidSettingError, match="cannot be changed"):
        tiny.with_settings(core=None)


CONSTRUCTOR_MISTAKES = [
    ({"foo": 1}, "foo", "is not a field of AlignedHF"),
    ({"principel": "Be kind."}, "principel", "did you mean 'principle'?"),
    ({"max_tokens": 8}, "max_tokens", "did you mean 'max_new_tokens'?"),
    ({"max_new_tokens": 10**9}, "max_new_tokens", "the context window is 256 tokens"),
    ({"max_new_tokens": 256}, "max_new_tokens", "the prompt needs at least one"),
    ({"max_new_tokens": 64, "context_window": 64}, "max_new_tokens", "the context window is 64 tokens"),
    ({"method": "opad", "principle": "Be kind.", "beta": 1e-40}, "beta", ">= 1e-30"),
]
"""Keywords the constructor refuses by name: pydantic alone would drop an unknown one silently."""


@pytest.mark.parametrize(
    ("fields", "parameter", "says"), CONSTRUCTOR_MISTAKES, ids=[str(c[0]) for c in CONSTRUCTOR_MISTAKES]
)
def test_the_constructor_refuses_unknown_names_and_answers_that_cannot_fit(tiny_core, fields, parameter, says):
    with count_forwards(tiny_core) as forwards, pytest.raises(InvalidSettingError) as error:
        AlignedHF(tiny_core, **fields)
    assert error.value.parameter == parameter and says in str(error.value)
    assert forwards.count == 0


def test_the_largest_answer_that_fits_is_accepted_and_assignment_is_bounded_too(tiny):
    room = tiny.metadata.context_window - 1
    assert AlignedHF(tiny.core, max_new_tokens=room).max_new_tokens == room
    with pytest.raises(InvalidSettingError, match=f"must be at most {room}"):
        tiny.max_new_tokens = room + 1
    assert tiny.max_new_tokens == 8
    with pytest.raises(InvalidSettingError, match="max_new_tokens"):
        tiny.with_settings(max_new_tokens=10**9)


@pytest.mark.parametrize("load", ["default", "from_pretrained"])
def test_default_and_from_pretrained_check_names_before_loading(load, monkeypatch):
    loaded = []
    monkeypatch.setattr(AlignedLLM, "default", classmethod(lambda cls, **options: loaded.append(options)))
    monkeypatch.setattr(AlignedLLM, "from_pretrained", classmethod(lambda cls, *args, **kw: loaded.append(args)))
    make = AlignedHF.default if load == "default" else lambda **fields: AlignedHF.from_pretrained("m", **fields)
    with pytest.raises(InvalidSettingError, match=r"^principel: is not a field of AlignedHF; did you mean 'principle'"):
        make(principel="Be kind.")
    assert loaded == []


def test_assignment_coerces_like_construction(tiny):
    tiny.stop = ["END", "STOP"]
    assert tiny.stop == ("END", "STOP")
    assert AlignedHF(tiny.core, stop=["END", "STOP"], max_new_tokens=8).stop == tiny.stop
    tiny.beta = 2
    assert tiny.beta == 2.0 and isinstance(tiny.beta, float)


def test_only_given_settings_reach_the_core(tiny):
    assert tiny.complete(PROMPT).raw["settings"] == {"method": "vanilla", "max_new_tokens": 8}
    sampled = tiny.with_settings(temperature=0.7, seed=3, top_p=0.9)
    assert sampled.complete(PROMPT).raw["settings"] == {
        "method": "vanilla", "max_new_tokens": 8, "temperature": 0.7, "seed": 3, "top_p": 0.9,
    }  # fmt: skip
    assert sampled.complete(PROMPT).text == sampled.complete(PROMPT).text, "seeded sampling repeats"


def test_copies_share_the_model_and_not_the_settings(tiny):
    polite = tiny.with_settings(method="opad", principle="Be polite.")
    blunt = polite.with_settings(principle="Be blunt.", beta=2.0, stop=["."])
    assert polite.core is tiny.core is blunt.core
    assert polite.callback_manager is tiny.callback_manager
    blunt.beta = 4.0
    polite.principle = "Be very polite."
    assert (tiny.method, tiny.principle, tiny.beta, tiny.stop) == ("vanilla", None, None, None)
    assert (polite.principle, polite.beta, polite.stop) == ("Be very polite.", None, None)
    assert (blunt.principle, blunt.beta, blunt.stop) == ("Be blunt.", 4.0, (".",))
    assert tiny.to_payload()["settings"] == {"method": "vanilla", "max_new_tokens": 8, "trace": False}


def test_copies_decode_with_their_own_settings_side_by_side(tiny):
    """Two configured copies used from two threads at once: each response shows its own settings."""
    copies = {
        "plain": tiny,
        "brief": tiny.with_settings(method="opad", principle="Be brief.", trace=True),
        "formal": tiny.with_settings(method="opad", principle="Be formal and precise.", beta=3.0, trace=True),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        responses = dict(zip(copies, pool.map(lambda llm: llm.complete(PROMPT), copies.values()), strict=True))
    assert responses["plain"].raw["settings"] == {"method": "vanilla", "max_new_tokens": 8}
    assert responses["brief"].raw["settings"]["principle"] == "Be brief."
    assert responses["formal"].raw["settings"]["principle"] == "Be formal and precise."
    assert responses["formal"].raw["settings"]["beta"] == 3.0 and "beta" not in responses["brief"].raw["settings"]
    assert set(responses["brief"].raw["trace"][0].logprobs) == {"constrained", "unconstrained"}
    assert "trace" not in responses["plain"].raw
    prompt_tokens = {name: response.raw["usage"]["prompt_tokens"] for name, response in responses.items()}
    assert prompt_tokens["plain"] < prompt_tokens["brief"] < prompt_tokens["formal"], "each principle in its prompt"


def test_per_query_engines_keep_their_own_principles(tiny, events):
    """Query engines pass no kwargs: copies configure them, and each query runs with its own copy."""
    index = VectorStoreIndex.from_documents([Document(text="Green tea is steamed; black tea is oxidised.")])
    users = {"ana": "Answer in Spanish.", "bo": "Answer like a pirate."}
    engines = {
        user: index.as_query_engine(llm=tiny.with_settings(principle=p), response_mode="simple_summarize")
        for user, p in users.items()
    }
    order = ["ana", "bo", "ana", "bo"]
    for user in order:
        engines[user].query("How is black tea made?")
    starts = events.of(LLMChatStartEvent)
    ends = events.of(LLMChatEndEvent)
    assert [event.model_dict["settings"].get("principle") for event in starts] == [users[u] for u in order]
    assert [event.response.raw["settings"].get("principle") for event in ends] == [users[u] for u in order]
    assert tiny.principle is None


def test_fields_are_typed_from_the_registry():
    properties = AlignedHF.model_json_schema()["properties"]
    assert properties["beta"]["anyOf"] == [{"type": "number", "minimum": 0.0}, {"type": "null"}]
    assert properties["k"]["anyOf"] == [{"type": "integer", "minimum": 1}, {"type": "null"}]
    assert properties["alpha"]["anyOf"][0] == {"type": "number", "exclusiveMinimum": 0.0, "maximum": 1.0}
    assert (properties["max_new_tokens"]["type"], properties["max_new_tokens"]["minimum"]) == ("integer", 1)
    assert properties["pad_base"]["anyOf"][0] == {"enum": ["profiled", "plain"], "type": "string"}
    assert "opad: " in properties["beta"]["description"] and "pad: " in properties["beta"]["description"]
    assert "core" not in properties, "the loaded model has no JSON schema: left out"


@pytest.mark.parametrize("load", ["default", "from_pretrained"])
def test_loading_takes_every_load_option(load, monkeypatch, tiny_core):
    """``from_pretrained`` takes every ``ModelSpec`` load option (and ``default`` those the bundled model can use)."""
    loaded = []
    loader = classmethod(lambda cls, *args, **kw: loaded.append(kw) or tiny_core)
    monkeypatch.setattr(AlignedLLM, "from_pretrained", loader)
    monkeypatch.setattr(AlignedLLM, "default", loader)
    options = {"adapter": "/lora", "reward_model": "/persrm", "device": "cpu", "dtype": "float32"}
    if load == "from_pretrained":
        options["reference"] = "/sft"
        assert set(ModelSpec.options()) == set(options)
    make = AlignedHF.default if load == "default" else lambda **kw: AlignedHF.from_pretrained("m", **kw)
    llm = make(**options, max_new_tokens=8)
    assert loaded == [options]
    assert llm.core is tiny_core


def test_metadata_is_computed_when_settings_change_not_per_access(tiny, monkeypatch):
    renders = []
    real_encode_rows = tiny.core.encode_rows
    monkeypatch.setattr(tiny.core, "encode_rows", lambda *a, **kw: renders.append(1) or real_encode_rows(*a, **kw))
    before = [tiny.metadata.context_window for _ in range(3)]
    assert renders == [] and len(set(before)) == 1
    tiny.principle = "Answer in one short sentence, please, and be kind."
    assert renders == [1]
    assert tiny.metadata.context_window < before[0], "the principle's tokens are kept free"
    assert renders == [1]


def test_a_call_checks_its_settings_once(tiny, monkeypatch):
    """A call's settings are checked by the core's ``generate`` alone: as many checks as calling the core directly."""
    checks = []
    real_init = DecodeSettings.__init__
    monkeypatch.setattr(DecodeSettings, "__init__", lambda self, **kw: checks.append(1) or real_init(self, **kw))
    tiny.core.generate(PROMPT, method="vanilla", max_new_tokens=8, temperature=0.5, seed=1)
    direct = len(checks)
    checks.clear()
    tiny.complete(PROMPT, temperature=0.5, seed=1)
    assert len(checks) == direct


LATER_METHOD = """
import json
from aligned_llm import Parameter, Vanilla, register_method
from llama_index.llms.aligned import AlignedHF

class Later(Vanilla):
    name = "later"
    parameters = (Parameter("strength", float, 0.5, "how strong", minimum=0.0, maximum=4.0),)

register_method(Later)
print(json.dumps(AlignedHF.model_json_schema()["properties"]["strength"]))
"""


def test_a_method_registered_later_gains_a_typed_field():
    """In a fresh interpreter (a registration lasts for the process)."""
    done = subprocess.run([sys.executable, "-c", LATER_METHOD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout.strip().splitlines()[-1])
    assert schema["anyOf"] == [{"type": "number", "minimum": 0.0, "maximum": 4.0}, {"type": "null"}]
