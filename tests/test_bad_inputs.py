"""Bad input on every public surface: the library's error, naming the parameter (or the file), before any work.

Two tables, each run on every surface that can express a row:

- ``BAD_CALLS``: what a user passes when decoding (prompt, settings). Surfaces: ``generate``,
  ``stream``, LangChain's chat model and text LLM, LlamaIndex's ``complete`` and ``chat``, and the
  ``aligned-llm generate`` command. The model's forward is replaced by one that fails, so a row
  also proves that no model work started.
- ``BAD_LOADS``: what a user passes when loading (a source, options, or a model or adapter folder
  with a broken file). Surfaces: ``AlignedLLM.from_pretrained``, the command's ``--model``,
  LangChain's ``model=``, LlamaIndex's ``AlignedHF.from_pretrained``.

Adding a case is adding a row. A surface that cannot express a row (the command has no flag for
a dict profile, LangChain's ``model`` is a string) leaves it out; ``only=`` restricts a row further.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from transformers import LlamaForCausalLM

from aligned_llm import AlignedLLM, InvalidSettingError, ModelLoadError
from aligned_llm.cli import main
from tests.faults import ADAPTER_FAULTS, MODEL_FAULTS


@dataclass(frozen=True)
class BadCall:
    """A decoding call that must fail with ``error`` naming ``parameter`` (for ``prompt[0].content``: ``prompt``)."""

    name: str
    parameter: str
    prompt: Any = "Hi"
    settings: Mapping[str, Any] = field(default_factory=dict)
    error: type[Exception] = InvalidSettingError
    only: frozenset[str] | None = None


BAD_CALLS = [
    BadCall("lone surrogate in the prompt", "prompt", prompt="\ud800 hi"),
    BadCall("lone surrogate in a message", "prompt", prompt=[{"role": "user", "content": "hi \udfff"}]),
    BadCall("lone surrogate in a system message", "prompt",
            prompt=[{"role": "system", "content": "\udc80"}, {"role": "user", "content": "Hi"}]),
    BadCall("lone surrogate in the principle", "principle", settings={"method": "opad", "principle": "Be \ud800."}),
    BadCall("lone surrogate in the profile", "profile", settings={"method": "pad", "profile": "likes \ud83d"}),
    BadCall("lone surrogate in a profile name", "profile", settings={"method": "pad", "profile": {"f\udc00": 1.0}}),
]  # fmt: skip


LANGCHAIN_MISSING = "the LangChain integration is not installed (pip install -e integrations/langchain)"
LLAMAINDEX_MISSING = "the LlamaIndex integration is not installed (pip install -e integrations/llama-index)"

TINY = "<the tiny model folder>"
"""A row's ``source`` when it is the (intact or broken) tiny model folder."""


@dataclass(frozen=True)
class BadLoad:
    """A load that must fail with ``error`` naming ``parameter``, or (a ``ModelLoadError``) the file ``parameter``.

    ``model_fault``/``adapter_fault`` name a fault of ``tests/faults.py`` applied to a copy of the
    tiny model or adapter; ``source`` replaces the model folder; ``options`` are load options.
    """

    name: str
    parameter: str
    source: Any = TINY
    options: Mapping[str, Any] = field(default_factory=dict)
    model_fault: str | None = None
    adapter_fault: str | None = None
    error: type[Exception] = InvalidSettingError
    only: frozenset[str] | None = None


_MODEL_FILE_ROWS = [BadLoad(fault, MODEL_FAULTS[fault][0], model_fault=fault, error=ModelLoadError)
                    for fault in sorted(MODEL_FAULTS)]  # fmt: skip
_ADAPTER_FILE_ROWS = [BadLoad(fault, ADAPTER_FAULTS[fault][0] or "adapter", adapter_fault=fault, error=ModelLoadError)
                      for fault in sorted(ADAPTER_FAULTS)]  # fmt: skip
BAD_LOADS = [
    BadLoad("no source", "name_or_path", source=None),
    BadLoad("a number as source", "name_or_path", source=3),
    BadLoad("bytes as source", "name_or_path", source=b"/models/x"),
    BadLoad("a CPU index", "device", options={"device": "cpu:99"}),
    BadLoad("a CUDA index that does not exist", "device", options={"device": "cuda:99"}),
    BadLoad("a device type that is not one", "device", options={"device": "meta"}),
    BadLoad("an adapter that is not a path", "adapter", options={"adapter": 7}),
    *_MODEL_FILE_ROWS,
    *_ADAPTER_FILE_ROWS,
]

CLI_FLAGS = {"method": "--method", "principle": "--principle", "profile": "--profile", "beta": "--beta", "k": "--k",
             "alpha": "--alpha", "rho": "--rho", "opad_window": "--opad-window", "max_new_tokens": "--max-new-tokens",
             "temperature": "--temperature", "top_p": "--top-p", "seed": "--seed", "stop": "--stop",
             "device": "--device", "dtype": "--dtype", "adapter": "--adapter"}  # fmt: skip
"""The command's flag for each setting or load option it can take (as text)."""


def _root(parameter: str) -> str:
    """``prompt[0].content`` → ``prompt``: the argument a name points into."""
    return parameter.split("[")[0].split(".")[0]


def _cli_flags(values: Mapping[str, Any]) -> list[str] | None:
    flags = []
    for name, value in values.items():
        if name not in CLI_FLAGS or isinstance(value, (bool, Mapping, list, tuple, bytes)) or value is None:
            return None
        flags += [CLI_FLAGS[name], str(value)]
    return flags


# --- decoding calls -------------------------------------------------------------------------------------------------


def _generate(llm: AlignedLLM, bad: BadCall) -> Any:
    return llm.generate(bad.prompt, max_new_tokens=4, **bad.settings)


def _stream(llm: AlignedLLM, bad: BadCall) -> Any:
    return list(llm.stream(bad.prompt, max_new_tokens=4, **bad.settings))


def _langchain_messages(prompt: Any) -> Any:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    if isinstance(prompt, str):
        return prompt
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[message["role"]](content=message["content"]) for message in prompt]


def _langchain_chat(llm: AlignedLLM, bad: BadCall) -> Any:
    pytest.importorskip("langchain_aligned_llm", reason=LANGCHAIN_MISSING)
    from langchain_aligned_llm import ChatAlignedLLM

    return ChatAlignedLLM(llm=llm, max_tokens=4).invoke(_langchain_messages(bad.prompt), **bad.settings)


def _langchain_text(llm: AlignedLLM, bad: BadCall) -> Any:
    pytest.importorskip("langchain_aligned_llm", reason=LANGCHAIN_MISSING)
    from langchain_aligned_llm import AlignedLLMText

    return AlignedLLMText(llm=llm, max_tokens=4).invoke(bad.prompt, **bad.settings)


def _llamaindex_complete(llm: AlignedLLM, bad: BadCall) -> Any:
    pytest.importorskip("llama_index.llms.aligned", reason=LLAMAINDEX_MISSING)
    from llama_index.llms.aligned import AlignedHF

    return AlignedHF(llm, max_new_tokens=4).complete(bad.prompt, **bad.settings)


def _llamaindex_chat(llm: AlignedLLM, bad: BadCall) -> Any:
    pytest.importorskip("llama_index.llms.aligned", reason=LLAMAINDEX_MISSING)
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.aligned import AlignedHF

    conversation = [{"role": "user", "content": bad.prompt}] if isinstance(bad.prompt, str) else bad.prompt
    messages = [ChatMessage(role=message["role"], content=message["content"]) for message in conversation]
    return AlignedHF(llm, max_new_tokens=4).chat(messages, **bad.settings)


def _text_prompt(bad: BadCall) -> bool:
    return isinstance(bad.prompt, str)


def _any(bad: BadCall) -> bool:
    return True


CALL_SURFACES: dict[str, tuple[Callable[[BadCall], bool], Callable[[AlignedLLM, BadCall], Any]]] = {
    "generate": (_any, _generate),
    "stream": (_any, _stream),
    "langchain-chat": (_any, _langchain_chat),
    "langchain-text": (_text_prompt, _langchain_text),
    "llamaindex-complete": (_text_prompt, _llamaindex_complete),
    "llamaindex-chat": (_any, _llamaindex_chat),
    "cli": (lambda bad: _text_prompt(bad) and _cli_flags(bad.settings) is not None, None),
}
"""Surface name -> (whether it can express a row, how to make the call); the command runs through ``main``."""


def _call_cases() -> list[Any]:
    return [
        pytest.param(bad, surface, id=f"{surface}: {bad.name}")
        for bad in BAD_CALLS
        for surface, (accepts, _) in CALL_SURFACES.items()
        if accepts(bad) and (bad.only is None or surface in bad.only)
    ]


@pytest.fixture
def no_forward(monkeypatch) -> list[str]:
    """Every forward of a (tiny) Llama fails the test, and is recorded."""
    calls: list[str] = []

    def forward(self, *args, **kwargs):
        calls.append("forward")
        raise AssertionError("a forward ran before the bad input was refused")

    monkeypatch.setattr(LlamaForCausalLM, "forward", forward)
    return calls


@pytest.mark.parametrize(("bad", "surface"), _call_cases())
def test_a_bad_call_is_refused_by_name_before_any_work(bad, surface, tiny_llm, tiny_dir, no_forward, capsys):
    if surface == "cli":
        argv = ["generate", bad.prompt, "--model", str(tiny_dir), "--max-new-tokens", "4", *_cli_flags(bad.settings)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{bad.parameter}" in err and "Traceback" not in err
    else:
        with pytest.raises(bad.error) as raised:
            CALL_SURFACES[surface][1](tiny_llm, bad)
        assert _root(raised.value.parameter) == bad.parameter
    assert no_forward == []


# --- loading --------------------------------------------------------------------------------------------------------


def _from_pretrained(source: Any, options: Mapping[str, Any]) -> Any:
    return AlignedLLM.from_pretrained(source, **options)


def _langchain_model(source: Any, options: Mapping[str, Any]) -> Any:
    pytest.importorskip("langchain_aligned_llm", reason=LANGCHAIN_MISSING)
    from langchain_aligned_llm import ChatAlignedLLM

    return ChatAlignedLLM(model=source, max_tokens=2, **options).invoke("Hi")


def _llamaindex_model(source: Any, options: Mapping[str, Any]) -> Any:
    pytest.importorskip("llama_index.llms.aligned", reason=LLAMAINDEX_MISSING)
    from llama_index.llms.aligned import AlignedHF

    return AlignedHF.from_pretrained(source, **options)


def _path_source(bad: BadLoad) -> bool:
    return bad.source is TINY


def _text_options(bad: BadLoad) -> bool:
    return all(isinstance(value, str) for value in bad.options.values())


LOAD_SURFACES: dict[str, tuple[Callable[[BadLoad], bool], Callable[[Any, Mapping[str, Any]], Any] | None]] = {
    "from_pretrained": (lambda bad: True, _from_pretrained),
    "langchain": (lambda bad: _path_source(bad) and _text_options(bad), _langchain_model),
    "llamaindex": (lambda bad: not set(bad.options) - {"device", "dtype"} and bad.adapter_fault is None,
                   _llamaindex_model),
    "cli": (lambda bad: _path_source(bad) and _cli_flags(bad.options) is not None, None),
}  # fmt: skip
"""Surface name -> (whether it can express a row, how to load); the command runs through ``main``."""


def _load_cases() -> list[Any]:
    return [
        pytest.param(bad, surface, id=f"{surface}: {bad.name}")
        for bad in BAD_LOADS
        for surface, (accepts, _) in LOAD_SURFACES.items()
        if accepts(bad) and (bad.only is None or surface in bad.only)
    ]


@pytest.fixture
def folders(tiny_dir, tiny_adapter_dir, tmp_path) -> Callable[[BadLoad], tuple[Any, dict[str, Any]]]:
    """The source and options of a row, its fault applied to fresh copies of the tiny model or adapter."""

    def make(bad: BadLoad) -> tuple[Any, dict[str, Any]]:
        source, options = (str(tiny_dir) if bad.source is TINY else bad.source), dict(bad.options)
        if bad.model_fault is not None:
            source = str(shutil.copytree(tiny_dir, tmp_path / "model"))
            MODEL_FAULTS[bad.model_fault][1](Path(source))
        if bad.adapter_fault is not None:
            adapter = shutil.copytree(tiny_adapter_dir, tmp_path / "adapter")
            ADAPTER_FAULTS[bad.adapter_fault][1](adapter)
            options["adapter"] = str(adapter)
        return source, options

    return make


@pytest.mark.parametrize(("bad", "surface"), _load_cases())
def test_a_bad_load_is_refused_with_the_parameter_or_file_named(bad, surface, folders, no_forward, capsys):
    source, options = folders(bad)
    if surface == "cli":
        assert main(["generate", "Hi", "--model", source, "--max-new-tokens", "2", *_cli_flags(options)]) == 2
        err = capsys.readouterr().err
        assert bad.parameter in err and "Traceback" not in err
        return
    with pytest.raises(bad.error) as raised:
        LOAD_SURFACES[surface][1](source, options)
    if bad.error is ModelLoadError:
        assert Path(raised.value.path).name == bad.parameter
    else:
        assert raised.value.parameter == bad.parameter
    assert no_forward == []
