"""Grammars: the answer spec and the tool format as an xgrammar structural tag, compiled per tokenizer and cached.

- tools under ``"auto"``: the format's own ``auto`` grammar (prose with a lazy trigger for the
  families' formats; the calibrated call-or-answer choice for ``generic``);
- ``"required"`` / a named tool: one or more valid calls (of that tool) and nothing else;
  ``parallel_tool_calls=False``: at most one call;
- a response format alone: the whole answer is JSON valid against its schema; with tools under
  ``"auto"``: that JSON, or calls;
- prose after the decision to answer: any text but the format's result markup.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from aligned_llm.answer.budget import TokenSpelling
from aligned_llm.answer.constraint import DECISION_POINTS, Decision, committing_tokens
from aligned_llm.answer.formats import ToolFormat
from aligned_llm.answer.formats.base import JSON_WHITESPACE, structural
from aligned_llm.answer.formats.generic import ANSWER_OPENING, CALLS_OPEN
from aligned_llm.answer.spec import AnswerSpec
from aligned_llm.errors import InvalidSettingError

if TYPE_CHECKING:
    import xgrammar

JSON_DIGITS = 16
"""Most digits in the integer part, the fraction and the exponent of a JSON number: float64
precision, and no runaway digits (``11.78888888…`` until the length limit, another common
failure of small models)."""
GRAMMAR_CACHE_SIZE = 32
"""Most compiled grammars kept per tokenizer; the least recently used one is dropped first.

A compiled grammar holds per-token tables of its rules: 1.2 MB for a 3-property response format
and 2.3 MB for a 200-property one on the bundled model's 49k-token vocabulary (measured with
``CompiledGrammar.memory_size_bytes``), more on larger vocabularies; 60 distinct response formats
once added 194 MB to a server that kept them all. 32 grammars stay under about 100 MB there,
while agents, which send the same tools at every turn, keep theirs; a format dropped is
compiled again when it returns."""
_LOOSE_STRING_CHARACTER = r"[^\"\\\r\n]"
_STRICT_STRING_CHARACTER = r"[^\0-\x1f\"\\\r\n]"
_NUMBER_BOUNDS = (
    ("[0-9]*", f"[0-9]{{0, {JSON_DIGITS - 1}}}"),
    ("basic_number_digits{1, -1}", f"basic_number_digits{{1, {JSON_DIGITS}}}"),
)


def _xgrammar() -> Any:
    import xgrammar

    return xgrammar


def structural_tag(spec: AnswerSpec, fmt: ToolFormat | None) -> Any:
    """The structural tag of an answer that is not free text (``fmt``: how its calls are written, if it has tools)."""
    st = structural()
    if spec.calls_tools and fmt is None:
        raise ValueError("an answer with tools needs a tool format")
    tools = spec.callable_tools
    parallel = spec.parallel if spec.parallel is not None or fmt is None else fmt.parallel
    answer: Any
    if spec.response is not None:
        answer = st.JSONSchemaFormat(json_schema=spec.response.grammar_schema, max_whitespace_cnt=JSON_WHITESPACE)
        if spec.calls_tools and spec.choice.mode == "auto":
            answer = st.OrFormat(elements=[answer, fmt.calls(tools, parallel)])
        elif spec.calls_tools:
            answer = fmt.calls(tools, parallel)
    elif spec.choice.mode == "auto":
        answer = fmt.auto(tools, parallel)
    else:
        answer = fmt.calls(tools, parallel)
    return st.StructuralTag(format=answer)


def prose_tag(fmt: ToolFormat) -> Any:
    """Any text without the format's result markup (the prose after a decision to answer)."""
    st = structural()
    return st.StructuralTag(format=st.AnyTextFormat(excludes=fmt.excludes()))


def check_compiles(spec: AnswerSpec) -> None:
    """Raise ``InvalidSettingError`` naming ``tools`` or ``response_format`` if xgrammar cannot use a schema."""
    xgr = _xgrammar()
    for tool in spec.tools:
        try:
            xgr.Grammar.from_json_schema(json.dumps(tool.parameters))
        except Exception as error:  # xgrammar raises RuntimeError with the reason
            raise InvalidSettingError(
                "tools", f"the parameters schema of {tool.name!r} cannot be compiled: {_reason(error)}"
            ) from None
    if spec.response is not None:
        try:
            xgr.Grammar.from_json_schema(json.dumps(spec.response.grammar_schema))
        except Exception as error:
            raise InvalidSettingError("response_format", f"the schema cannot be compiled: {_reason(error)}") from None


def _reason(error: Exception) -> str:
    return str(error).strip().splitlines()[-1].split(": ", 1)[-1] if str(error).strip() else type(error).__name__


def tightened_grammar(tag: Any) -> xgrammar.Grammar:
    """The grammar of a structural tag, with JSON that parsers accept and numbers of bounded length.

    xgrammar 0.2.8 writes a string with ``maxLength``/``minLength`` as "any character but a
    quote, backslash or line break": raw control characters (tab, ESC, ...) get in, and the
    output is then not JSON. They are excluded, as xgrammar already does for other strings.
    Digits are bounded (:data:`JSON_DIGITS`) only in xgrammar's shared ``basic_*`` rules, so a
    user's ``pattern`` is never changed.
    """

    def tighten(line: str) -> str:
        line = line.replace(_LOOSE_STRING_CHARACTER, _STRICT_STRING_CHARACTER)
        if line.startswith("basic_"):
            for loose, bounded in _NUMBER_BOUNDS:
                line = line.replace(loose, bounded)
        return line

    xgr = _xgrammar()
    lines = str(xgr.Grammar.from_structural_tag(tag)).splitlines()
    return xgr.Grammar.from_ebnf("\n".join(map(tighten, lines)))


class Grammars:
    """The grammar compiler of one tokenizer (its token table built once) with a bounded compile cache.

    Compilation runs outside the lock, so a long compilation never holds back another request's
    cached grammar; two requests compiling the same new grammar at once may both compile it.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int]) -> None:
        xgr = _xgrammar()
        self.info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids)
        )
        self.compiler = xgr.GrammarCompiler(self.info, cache_enabled=False)  # unbounded; this class keeps its own
        self.token_bytes: list[bytes] = list(self.info.decoded_vocab)
        self.spelling = TokenSpelling(self.token_bytes)
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._decision: Decision | None = None
        self._starting: dict[bytes, torch.Tensor] = {}
        self._lock = threading.Lock()

    def compile_tag(self, tag: Any) -> xgrammar.CompiledGrammar:
        """A structural tag's compiled grammar (cached by the tag; :data:`GRAMMAR_CACHE_SIZE` kept)."""
        key = tag.model_dump_json()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        compiled = self.compiler.compile_grammar(tightened_grammar(tag))
        with self._lock:
            self._cache[key] = compiled
            self._cache.move_to_end(key)
            while len(self._cache) > GRAMMAR_CACHE_SIZE:
                self._cache.popitem(last=False)
        return compiled

    def cached(self) -> int:
        """How many compiled grammars the cache holds."""
        with self._lock:
            return len(self._cache)

    def compile(self, spec: AnswerSpec, fmt: ToolFormat | None = None) -> xgrammar.CompiledGrammar:
        """The compiled grammar of ``spec`` written in ``fmt``."""
        return self.compile_tag(structural_tag(spec, fmt))

    def decision(self, bias: float) -> Decision:
        """The calibrated decision's token sets (built once per tokenizer) with this margin."""
        with self._lock:
            if self._decision is None:
                points = {
                    written: committing_tokens(self.token_bytes, written, CALLS_OPEN) for written in DECISION_POINTS
                }
                answers = {
                    written: committing_tokens(self.token_bytes, written, ANSWER_OPENING) for written in DECISION_POINTS
                }
                prefix = DECISION_POINTS[-1]
                opening = next((token for token, piece in enumerate(self.token_bytes) if piece == prefix), None)
                self._decision = Decision(points, answers, 0.0, opening)
            return replace(self._decision, bias=bias)

    def tokens_starting(self, text: str) -> torch.Tensor:
        """``[V]`` bool: the tokens whose text starts with ``text`` (cached)."""
        prefix = text.encode()
        with self._lock:
            if prefix not in self._starting:
                self._starting[prefix] = torch.tensor([piece.startswith(prefix) for piece in self.token_bytes])
            return self._starting[prefix]


_GRAMMARS: weakref.WeakKeyDictionary[Any, dict[tuple[int, tuple[int, ...]], Grammars]] = weakref.WeakKeyDictionary()
_GRAMMARS_LOCK = threading.Lock()


def grammars_for(tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int]) -> Grammars:
    """The shared :class:`Grammars` of a tokenizer (for this vocabulary size and stop ids)."""
    key = (vocab_size, tuple(sorted(stop_token_ids)))
    with _GRAMMARS_LOCK:
        per_tokenizer = _GRAMMARS.setdefault(tokenizer, {})
        if key not in per_tokenizer:
            per_tokenizer[key] = Grammars(tokenizer, vocab_size, stop_token_ids)
        return per_tokenizer[key]
