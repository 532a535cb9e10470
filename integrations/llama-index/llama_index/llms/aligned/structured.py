"""Streaming structured output that always calls the schema's tool.

``structured_predict`` runs LlamaIndex's ``FunctionCallingProgram``, which requires the tool
call (``tool_required=True``), so the grammar makes the object valid. Its streaming variant
(``stream_structured_predict``) does not pass that on and leaves the choice to the model,
which may answer in prose instead; here the streaming program names the schema's tool as the
``tool_choice``, so the streamed object is as valid as the one ``structured_predict`` returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llama_index.core.program.function_program import FunctionCallingProgram, get_function_tool
from llama_index.core.types import PydanticProgramMode

if TYPE_CHECKING:
    from llama_index.core.llms.function_calling import FunctionCallingLLM
    from llama_index.core.prompts import PromptTemplate
    from pydantic import BaseModel


def forced_program(
    llm: FunctionCallingLLM, output_cls: type[BaseModel], prompt: PromptTemplate
) -> FunctionCallingProgram | None:
    """The function-calling program that must call ``output_cls``'s tool; ``None`` for other program modes."""
    if llm.pydantic_program_mode not in (PydanticProgramMode.DEFAULT, PydanticProgramMode.FUNCTION):
        return None
    tool_name = get_function_tool(output_cls).metadata.name
    return FunctionCallingProgram.from_defaults(output_cls=output_cls, llm=llm, prompt=prompt, tool_choice=tool_name)
