"""with_structured_output on a tiny random model: every method returns validated objects, by grammar alone.

A random model never closes a free string, so the schemas bound their strings (``maxLength``,
enums); what a real model writes is left to the bundled-model tests.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypedDict

import pytest
from aligned_llm import InvalidSettingError
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage
from pydantic import BaseModel, Field
from pydantic.v1 import BaseModel as BaseModelV1
from pydantic.v1 import Field as FieldV1

from langchain_aligned_llm import ChatAlignedLLM

METHODS = ["json_schema", "function_calling", "json_mode"]


class Pet(BaseModel):
    """A pet."""

    name: str = Field(description="The pet's name", max_length=12)
    age: int = Field(description="Age in years")


class PetV1(BaseModelV1):
    """A pet."""

    name: str = FieldV1(max_length=12)
    age: int


class PetDict(TypedDict):
    """A pet."""

    species: Annotated[Literal["cat", "dog"], ..., "The kind of pet"]
    age: Annotated[int, ..., "Age in years"]


PET_SCHEMA = {
    "title": "Pet",
    "description": "A pet.",
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


@pytest.fixture
def chat(tools_model_dir) -> ChatAlignedLLM:
    return ChatAlignedLLM(model=tools_model_dir, device="cpu", max_tokens=80)


@pytest.mark.parametrize("method", METHODS)
def test_pydantic_schemas_give_validated_instances(chat, method):
    assert isinstance(chat.with_structured_output(Pet, method=method).invoke("Describe a pet."), Pet)
    assert isinstance(chat.with_structured_output(PetV1, method=method).invoke("Describe a pet."), PetV1)


@pytest.mark.parametrize("method", METHODS)
def test_typeddicts_give_dicts_that_fit_them(chat, method):
    pet = chat.with_structured_output(PetDict, method=method).invoke("Describe a pet.")
    assert set(pet) == {"species", "age"}
    assert pet["species"] in ("cat", "dog") and isinstance(pet["age"], int)


@pytest.mark.parametrize("method", METHODS)
def test_json_schemas_give_dicts_that_fit_them(chat, method):
    pet = chat.with_structured_output(PET_SCHEMA, method=method).invoke("Describe a pet.")
    assert isinstance(pet, dict)
    assert Pet.model_validate(pet).model_dump() == pet


def test_json_schema_sends_the_schema_as_the_response_format(chat, tools_spy):
    chat.with_structured_output(Pet, strict=True).invoke("Describe a pet.")
    response_format = tools_spy.calls[0].settings["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Pet"
    assert response_format["json_schema"]["strict"] is True
    assert set(response_format["json_schema"]["schema"]["properties"]) == {"name", "age"}
    assert "tools" not in tools_spy.calls[0].settings


def test_function_calling_requires_one_call_of_the_schema(chat, tools_spy):
    chat.with_structured_output(Pet, method="function_calling").invoke("Describe a pet.")
    settings = tools_spy.calls[0].settings
    assert [spec["function"]["name"] for spec in settings["tools"]] == ["Pet"]
    assert (settings["tool_choice"], settings["parallel_tool_calls"]) == ("Pet", False)


def test_json_mode_without_a_schema_asks_for_any_json_object(chat, tools_spy):
    with pytest.raises(OutputParserException, match="max_tokens"):  # a random model never closes its strings
        chat.with_structured_output(None, method="json_mode").invoke("Describe a pet as JSON.", max_tokens=3)
    assert tools_spy.calls[0].settings["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize("method", METHODS)
def test_streaming_yields_the_one_finished_object(chat, method):
    structured = chat.with_structured_output(Pet, method=method)
    assert list(structured.stream("Describe a pet.")) == [structured.invoke("Describe a pet.")]


async def test_async_gives_the_same_object(chat):
    structured = chat.with_structured_output(Pet)
    assert await structured.ainvoke("Describe a pet.") == structured.invoke("Describe a pet.")


def test_include_raw_returns_the_message_too(chat):
    out = chat.with_structured_output(Pet, method="function_calling", include_raw=True).invoke("Describe a pet.")
    assert isinstance(out["raw"], AIMessage)
    assert out["parsed"] == Pet.model_validate(out["raw"].tool_calls[0]["args"])
    assert out["parsing_error"] is None


def test_an_answer_cut_by_max_tokens_is_an_error_that_says_so(chat):
    with pytest.raises(OutputParserException, match="max_tokens"):
        chat.with_structured_output(Pet).invoke("Describe a pet.", max_tokens=3)
    short = chat.model_copy(update={"max_tokens": 3})
    out = short.with_structured_output(Pet, include_raw=True).invoke("Describe a pet.")
    assert out["parsed"] is None
    assert isinstance(out["parsing_error"], OutputParserException)
    assert out["raw"].response_metadata["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("schema", "kwargs", "parameter"),
    [(Pet, {"method": "xml"}, "method"), (None, {}, "schema"), (Pet, {"temperature": 0.5}, "temperature")],
)
def test_bad_arguments_are_refused_by_name(chat, schema, kwargs, parameter):
    with pytest.raises(InvalidSettingError) as error:
        chat.with_structured_output(schema, **kwargs)
    assert error.value.parameter == parameter
