"""A method defined only here, registered once, works by name on every surface.

Plain contrastive decoding (Li et al., 2023): among tokens the expert finds plausible
(p_e >= 0.1 · max p_e), pick argmax log p_expert − w · log p_amateur, with the policy as the
expert and the loaded reference model as the amateur. Its one parameter, ``amateur_weight``
(w > 0), is declared here and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
import torch

from aligned_llm import (
    AlignedLLM,
    DecodingMethod,
    InvalidSettingError,
    ModelSetup,
    Parameter,
    RowSpec,
    StepScores,
    TuningPanel,
    registered_temporarily,
    setting_names,
    token_html,
)
from aligned_llm.cli import main
from aligned_llm.setup import REFERENCE

PLAUSIBILITY = 0.1
PROMPT = "Tell me about the sea."
STEPS = 6


class Contrastive(DecodingMethod):
    """Contrastive decoding: the expert's log-probs minus ``amateur_weight`` × the amateur's."""

    name: ClassVar[str] = "contrastive"
    parameters: ClassVar[tuple[Parameter, ...]] = (
        Parameter(
            "amateur_weight", float, 1.0, "how much the amateur's log-probs are subtracted",
            minimum=0.0, exclusive_minimum=True, ui_range=(0.1, 3.0),
        ),
    )  # fmt: skip
    signal_label: ClassVar[str] = "contrastive: −w · log p_amateur"
    rows = (RowSpec("expert", guided=True), RowSpec("amateur", guided=True, model=REFERENCE))

    def __init__(self, amateur_weight: float = 1.0) -> None:
        self.amateur_weight = amateur_weight

    @classmethod
    def build(cls, settings: Mapping[str, Any], setup: ModelSetup) -> Contrastive:
        if not setup.has(REFERENCE):
            raise InvalidSettingError("method", "'contrastive' needs an amateur: from_pretrained(..., reference=...)")
        return cls(settings["amateur_weight"])

    def score(self, logits: torch.Tensor, state: dict, step: int) -> StepScores:
        expert = torch.log_softmax(logits[:, 0], dim=-1)
        amateur = torch.log_softmax(logits[:, 1], dim=-1)
        plausible = expert >= math.log(PLAUSIBILITY) + expert.max(dim=-1, keepdim=True).values
        signal = -self.amateur_weight * amateur
        return StepScores((expert + signal).masked_fill(~plausible, float("-inf")), signal, state)


def _reference_decode(llm: AlignedLLM, weight: float) -> list[int]:
    """The spec, recomputed naively: fresh full forwards of both models on the whole sequence each step.

    The score is taken in float64 (as Python floats would), with implausible tokens at −1e30 and
    ties to the lowest token id; whole-vocabulary tensor ops, no per-token loop.
    """
    ids = llm.chat_format.encode([{"role": "user", "content": PROMPT}])
    generated: list[int] = []
    for _ in range(STEPS):
        sequence = torch.tensor([ids + generated])
        with torch.no_grad():
            expert = torch.log_softmax(llm.model(sequence).logits[0, -1].float(), dim=-1)
            amateur = torch.log_softmax(llm.reference(sequence).logits[0, -1].float(), dim=-1)
        plausible = expert >= math.log(PLAUSIBILITY) + expert.max()
        scores = torch.where(plausible, expert.double() - weight * amateur.double(), -1e30)
        token = int(torch.argmax(scores))
        generated.append(token)
        if token in llm.stop_token_ids:
            break
    return generated


@pytest.fixture(scope="module", autouse=True)
def contrastive_registered():
    """The method is registered while this module's tests run, and only then."""
    with registered_temporarily(Contrastive):
        yield


@pytest.fixture(scope="module")
def pair(tiny_dir, tiny_reference_dir) -> AlignedLLM:
    return AlignedLLM.from_pretrained(tiny_dir, reference=tiny_reference_dir, device="cpu")


@pytest.fixture(scope="module")
def expected(pair) -> Any:
    return pair.generate(PROMPT, method="contrastive", amateur_weight=0.5, max_new_tokens=STEPS)


def test_core_decodes_the_registered_method_as_its_spec(pair, expected):
    assert list(expected.token_ids) == _reference_decode(pair, 0.5)
    other = pair.generate(PROMPT, method="contrastive", amateur_weight=3.0, max_new_tokens=STEPS)
    assert list(other.token_ids) == _reference_decode(pair, 3.0)
    assert "".join(pair.stream(PROMPT, method="contrastive", amateur_weight=0.5, max_new_tokens=STEPS)) == expected.text


async def test_async_core_surfaces(pair, expected):
    result = await pair.agenerate(PROMPT, method="contrastive", amateur_weight=0.5, max_new_tokens=STEPS)
    assert result.token_ids == expected.token_ids
    deltas = [d async for d in pair.astream(PROMPT, method="contrastive", amateur_weight=0.5, max_new_tokens=STEPS)]
    assert "".join(deltas) == expected.text


def test_its_parameter_is_checked_and_listed(pair, tiny_llm):
    assert "amateur_weight" in setting_names()
    with pytest.raises(InvalidSettingError, match=r"^amateur_weight: must be a finite number > 0"):
        pair.generate(PROMPT, method="contrastive", amateur_weight=0)
    with pytest.raises(InvalidSettingError, match=r"^amateur_weight: "):
        pair.generate(PROMPT, method="vanilla", amateur_weight=-2)  # another method's parameter is still checked
    with pytest.raises(InvalidSettingError, match=r"^amateur_wieght: is not a setting; .*amateur_weight"):
        pair.generate(PROMPT, method="contrastive", amateur_wieght=0.5)
    with pytest.raises(InvalidSettingError, match="needs an amateur"):
        tiny_llm.generate(PROMPT, method="contrastive")
    assert "contrastive" in pair.available_methods()
    assert "contrastive" not in tiny_llm.available_methods()


def test_cli_has_the_method_and_a_flag_for_its_parameter(tiny_dir, tiny_reference_dir, expected, capsys):
    code = main([
        "generate", PROMPT, "--model", str(tiny_dir), "--reference", str(tiny_reference_dir), "--device", "cpu",
        "--method", "contrastive", "--amateur-weight", "0.5", "--max-new-tokens", str(STEPS),
    ])  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out == expected.text + "\n"


def test_panel_has_a_control_for_its_parameter(pair, expected):
    panel = TuningPanel(pair, prompt=PROMPT, method="contrastive", baseline="none", max_new_tokens=STEPS)
    assert "contrastive" in panel.method.options
    panel.controls["amateur_weight"].value = 0.5
    panel.principle.value = ""
    assert not panel.controls["amateur_weight"].disabled
    assert panel.controls["beta"].disabled
    panel.generate()
    assert panel.wait(timeout=120) == "done"
    assert panel.result.token_ids == expected.token_ids


def test_langchain_field_per_call_bind_and_configurable(pair, expected):
    pytest.importorskip("langchain_aligned_llm", reason="the LangChain integration is not installed")
    from langchain_aligned_llm import ChatAlignedLLM
    from langchain_core.runnables import ConfigurableField

    chat = ChatAlignedLLM(llm=pair, method="contrastive", amateur_weight=0.5, max_tokens=STEPS)
    assert chat.invoke(PROMPT).content == expected.text
    plain = ChatAlignedLLM(llm=pair, max_tokens=STEPS)
    assert plain.invoke(PROMPT, method="contrastive", amateur_weight=0.5).content == expected.text
    assert plain.bind(method="contrastive", amateur_weight=0.5).invoke(PROMPT).content == expected.text
    configurable = chat.configurable_fields(amateur_weight=ConfigurableField(id="weight"))
    three = pair.generate(PROMPT, method="contrastive", amateur_weight=3.0, max_new_tokens=STEPS)
    assert configurable.invoke(PROMPT, config={"configurable": {"weight": 3.0}}).content == three.text
    with pytest.raises(ValueError, match="amateur_weight: must be a finite number > 0"):
        ChatAlignedLLM(llm=pair, amateur_weight=-1.0)  # pydantic's ValidationError, carrying the core's message
    with pytest.raises(InvalidSettingError, match=r"^amateur_wieght: is not a setting of this model"):
        plain.invoke(PROMPT, method="contrastive", amateur_wieght=0.5)


def test_llamaindex_per_call_and_with_settings(pair, expected):
    pytest.importorskip("llama_index.llms.aligned", reason="the LlamaIndex integration is not installed")
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.aligned import AlignedHF

    llm = AlignedHF(pair, method="contrastive", amateur_weight=0.5, max_new_tokens=STEPS)
    assert llm.chat([ChatMessage(role="user", content=PROMPT)]).message.content == expected.text
    three = pair.generate(PROMPT, method="contrastive", amateur_weight=3.0, max_new_tokens=STEPS)
    assert llm.with_settings(amateur_weight=3.0).chat([ChatMessage(role="user", content=PROMPT)]).message.content == (
        three.text
    )
    plain = AlignedHF(pair, max_new_tokens=STEPS)
    answer = plain.chat([ChatMessage(role="user", content=PROMPT)], method="contrastive", amateur_weight=0.5)
    assert answer.message.content == expected.text


def test_token_view_uses_the_method_label(pair):
    traced = pair.generate(PROMPT, method="contrastive", amateur_weight=0.5, max_new_tokens=STEPS, trace=True)
    assert "contrastive: −w · log p_amateur" in token_html(traced)
