"""The registry is the one source of truth: declarations check values, and every surface offers every setting."""

from __future__ import annotations

import re

import pytest

from aligned_llm import (
    OPAD,
    DecodeSettings,
    DecodingMethod,
    InvalidSettingError,
    Parameter,
    Vanilla,
    method_class,
    register_method,
    registered_methods,
    registered_temporarily,
    setting_names,
)
from aligned_llm.cli import SETTING_FLAGS_SKIPPED, main
from aligned_llm.registry import method_parameters


def test_builtin_methods_are_registered_in_order():
    assert list(registered_methods())[:5] == ["vanilla", "opad", "linear", "pad", "aad"]


@pytest.mark.parametrize(
    ("parameter", "good", "bad"),
    [
        (
            Parameter("x", float, 1.0, "h", minimum=0, exclusive_minimum=True),
            [1e-9, 3, 2.5],
            [0, -1, "1", True, float("nan")],
        ),
        (Parameter("n", int, 1, "h", minimum=1, maximum=3), [1, 3], [0, 4, 2.0, True]),
        (Parameter("c", str, "a", "h", choices=("a", 1)), ["a", 1], ["1", "b", 1.0, True]),
        (Parameter("b", bool, False, "h"), [True, False], [1, "yes", None]),
    ],
    ids=["float", "int", "choices", "bool"],
)
def test_parameter_declarations_check_values(parameter, good, bad):
    for value in good:
        assert parameter.validate(value) == value
    for value in bad:
        with pytest.raises(InvalidSettingError, match=f"^{parameter.name}: must be"):
            parameter.validate(value)


def test_cli_parsing_uses_the_declaration():
    window = OPAD.parameters[1]
    assert window.parse("1") == 1 and window.parse("last") == "last"
    with pytest.raises(InvalidSettingError):
        window.parse("2")


def test_decode_settings_defaults_follow_the_chosen_method_and_are_immutable():
    settings = DecodeSettings(method="opad", principle="p", beta=2)
    assert (
        settings.beta == 2.0
        and settings.k == 10
        and settings.method_settings()
        == {
            "beta": 2.0,
            "opad_window": "reference",
        }
    )
    assert settings == DecodeSettings(method="opad", principle="p", beta=2.0)
    assert settings.replace(beta=3).beta == 3.0
    with pytest.raises(AttributeError):
        settings.beta = 5  # type: ignore[misc]


def test_registration_refuses_conflicting_declarations():
    class Clash(DecodingMethod):
        name = "clash-test"
        parameters = (Parameter("beta", int, 1, "an integer beta"),)

        def score(self, logits, state, step):
            raise NotImplementedError

    with pytest.raises(ValueError, match="one name must mean one kind of value"):
        register_method(Clash)

    class Reserved(DecodingMethod):
        name = "reserved-test"
        parameters = (Parameter("temperature", float, 1.0, "clashes with a common setting"),)

        def score(self, logits, state, step):
            raise NotImplementedError

    with pytest.raises(ValueError, match="reserved"):
        register_method(Reserved)
    with pytest.raises(ValueError, match="already registered"):
        register_method(type("Again", (OPAD,), {}))
    assert "clash-test" not in registered_methods() and "reserved-test" not in registered_methods()


def _cli_destinations(capsys) -> set[str]:
    """The settings ``aligned-llm generate --help`` offers a flag for (``--max-new-tokens`` → ``max_new_tokens``)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["generate", "--help"])
    assert exited.value.code == 0
    return {flag[2:].replace("-", "_") for flag in re.findall(r"--[a-z][a-z0-9-]*", capsys.readouterr().out)}


def test_every_registered_setting_is_reachable_on_every_surface(tiny_llm, capsys):
    pytest.importorskip("langchain_aligned_llm", reason="the LangChain integration is not installed")
    pytest.importorskip("llama_index.llms.aligned", reason="the LlamaIndex integration is not installed")
    from langchain_aligned_llm import AlignedLLMText, ChatAlignedLLM
    from langchain_aligned_llm.params import settings_map
    from llama_index.llms.aligned import AlignedHF

    from aligned_llm import TuningPanel

    names = setting_names()
    assert set(method_parameters()) <= set(names)
    cli = _cli_destinations(capsys)
    panel = TuningPanel(tiny_llm)
    langchain_fields = {core: field for field, core in settings_map().items()}
    for name in names:
        if name not in SETTING_FLAGS_SKIPPED or name in method_parameters():
            assert name in cli, f"CLI has no flag for {name}"
        if name in method_parameters():
            assert name in panel.controls, f"the panel has no control for {name}"
        if name != "stop":
            for cls in (ChatAlignedLLM, AlignedLLMText):
                assert langchain_fields[name] in cls.model_fields, f"{cls.__name__} has no field for {name}"
        assert name in AlignedHF.model_fields, f"AlignedHF has no field for {name}"


def test_a_temporary_registration_leaves_the_registry_as_it_was():
    before = registered_methods()

    class Temporary(Vanilla):
        name = "temporary-test"

    class LouderOPAD(OPAD):
        name = "opad"

    with registered_temporarily(Temporary):
        assert method_class("temporary-test") is Temporary
    with registered_temporarily(LouderOPAD, replace=True):
        assert method_class("opad") is LouderOPAD
    with pytest.raises(ValueError, match="already registered"), registered_temporarily(Temporary, LouderOPAD):
        pass
    assert registered_methods() == before
