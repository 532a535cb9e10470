"""The answer wing: what an answer must look like, and reading it back.

request settings → :mod:`.spec` (tools, tool choice, response format, checked once) →
:mod:`.plan` (the tool format of the chat template, :mod:`.formats`) → the prompt rendering,
the :mod:`.constraint` the engine applies (its grammar from :mod:`.grammar`) → tokens → the
:mod:`.reader` (prose, tool calls, the parsed value).
"""

from aligned_llm.answer.formats import TOOL_FORMATS, ToolFormat, detect_format, resolve_format
from aligned_llm.answer.plan import AnswerPlan, plan_answer
from aligned_llm.answer.spec import AnswerSpec, ResponseFormat, ToolChoice, ToolSpec, answer_spec

__all__ = [
    "TOOL_FORMATS",
    "AnswerPlan",
    "AnswerSpec",
    "ResponseFormat",
    "ToolChoice",
    "ToolFormat",
    "ToolSpec",
    "answer_spec",
    "detect_format",
    "plan_answer",
    "resolve_format",
]
