"""Grammars: what a request's answer must look like, compiled by xgrammar into a per-step token mask.

A constraint is a layer over any decoding method: the method scores every token, the request's
grammar masks the tokens it does not allow to -inf, the engine chooses a token, and the
grammar's matcher is advanced with it. Grammars are built from the tools and the response
format (see :func:`structural_tag`), compiled once per tokenizer and cached.

Inside a *constrained span* (a tool call from ``<tool_call>`` to ``</tool_call>``, or the whole
answer under a response format or ``tool_choice="required"``/a named tool),
``constrained_alignment`` decides what the method does:
``"steer"`` keeps its scores; ``"off"`` replaces them with the first row's plain log-probs, so a
principle such as "talk like a pirate" cannot rewrite argument values.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from aligned_llm.errors import InvalidSettingError
from aligned_llm.output_format import ResponseFormat, normalize_response_format
from aligned_llm.tools import (
    ARGUMENTS_PREFIX,
    CALL_CLOSE,
    CALL_OPEN,
    CALL_PREFIX,
    CALL_SUFFIX,
    RESPONSE_CLOSE,
    RESPONSE_OPEN,
    ToolChoice,
    ToolPrompt,
    ToolSpec,
    normalize_tool_choice,
    normalize_tools,
    protect_calls,
)

if TYPE_CHECKING:
    import xgrammar

ConstrainedAlignment = Literal["steer", "off"]
CONSTRAINED_ALIGNMENT: tuple[ConstrainedAlignment, ...] = ("steer", "off")
DEFAULT_CONSTRAINED_ALIGNMENT: ConstrainedAlignment = "off"
"""Chosen by measurement (docs/tools.md): with the method steering inside calls, a principle
changed argument values; with it off, arguments are the model's own reading of the request."""
JSON_WHITESPACE = 1
"""Most whitespace characters allowed in a row inside JSON: one-line JSON, and no runaway
whitespace (a common failure of small models under a JSON grammar)."""
_CALL_SEPARATOR = "\n"


def check_constrained_alignment(value: object) -> ConstrainedAlignment:
    """``constrained_alignment`` must be ``"steer"`` or ``"off"``."""
    if value not in CONSTRAINED_ALIGNMENT:
        raise InvalidSettingError("constrained_alignment", f"must be one of {CONSTRAINED_ALIGNMENT}, got {value!r}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class OutputSpec:
    """What the answer must be: tool calls of ``tools`` under ``choice``, and/or JSON of ``response``."""

    tools: tuple[ToolSpec, ...] = ()
    choice: ToolChoice = field(default_factory=ToolChoice)
    parallel: bool = True
    response: ResponseFormat | None = None

    @property
    def calls_tools(self) -> bool:
        """Whether tool calls may appear in the answer."""
        return bool(self.tools) and self.choice.mode != "none"

    @property
    def is_free_text(self) -> bool:
        """Whether nothing constrains the answer."""
        return not self.calls_tools and self.response is None

    def prompt(self) -> ToolPrompt | None:
        """What the conversation is given: tools (unless ``tool_choice="none"``), format instruction."""
        if self.is_free_text:
            return None
        return ToolPrompt(
            self.tools if self.calls_tools else (), "" if self.response is None else self.response.instruction()
        )


def output_spec(
    tools: object,
    tool_choice: object,
    parallel_tool_calls: object,
    response_format: object,
    constrained: object,
    constrained_alignment: object,
) -> OutputSpec:
    """Validate the tool-calling and structured-output settings; raise naming the bad one.

    With ``constrained=True`` every schema is also checked to compile, before any model work.
    """
    specs = normalize_tools(tools)
    choice = normalize_tool_choice(tool_choice, specs)
    if not isinstance(parallel_tool_calls, bool):
        raise InvalidSettingError("parallel_tool_calls", f"must be True or False, got {parallel_tool_calls!r}")
    if not isinstance(constrained, bool):
        raise InvalidSettingError("constrained", f"must be True or False, got {constrained!r}")
    check_constrained_alignment(constrained_alignment)
    spec = OutputSpec(specs, choice, parallel_tool_calls, normalize_response_format(response_format))
    if constrained and not spec.is_free_text:
        check_compiles(spec)
    return spec


def _xgrammar() -> Any:
    import xgrammar

    return xgrammar


def structural_tag(spec: OutputSpec) -> Any:
    """The xgrammar structural tag of ``spec`` (which must not be free text).

    - tools, ``"auto"``: free text (never ``<tool_response>`` tags: results come from tools);
      once ``<tool_call>`` is written it must be a valid call of one of the tools, then only
      further calls (one per line) or the end;
    - ``"required"``: one or more valid calls and nothing else; a named tool: calls of it only;
    - ``parallel=False``: at most one call;
    - a response format alone: the whole answer is JSON valid against its schema; with tools
      under ``"auto"``: that JSON, or tool calls.
    """
    st = _xgrammar().structural_tag
    tools = spec.tools if spec.choice.name is None else tuple(t for t in spec.tools if t.name == spec.choice.name)
    tags = [
        st.TagFormat(
            begin=f"{CALL_OPEN}{CALL_PREFIX}{_json_string(tool.name)}{ARGUMENTS_PREFIX}",
            content=st.JSONSchemaFormat(json_schema=tool.parameters, max_whitespace_cnt=JSON_WHITESPACE),
            end=CALL_SUFFIX,
        )
        for tool in tools
    ]
    calls = st.TagsWithSeparatorFormat(
        tags=tags, separator=_CALL_SEPARATOR, at_least_one=True, stop_after_first=not spec.parallel
    )
    answer: Any
    if spec.response is not None:
        answer = st.JSONSchemaFormat(json_schema=spec.response.grammar_schema, max_whitespace_cnt=JSON_WHITESPACE)
        if spec.calls_tools and spec.choice.mode == "auto":
            answer = st.OrFormat(elements=[answer, calls])
        elif spec.calls_tools:
            answer = calls
    elif spec.choice.mode == "auto":
        first = st.TriggeredTagsFormat(
            triggers=[CALL_OPEN], tags=tags, stop_after_first=True, excludes=[RESPONSE_OPEN, RESPONSE_CLOSE]
        )
        more = st.TagsWithSeparatorFormat(tags=tags, separator=_CALL_SEPARATOR)
        answer = first if not spec.parallel else st.SequenceFormat(elements=[first, more])
    else:
        answer = calls
    return st.StructuralTag(format=answer)


def _json_string(text: str) -> str:
    import json

    return json.dumps(text)


def check_compiles(spec: OutputSpec) -> None:
    """Raise ``InvalidSettingError`` naming ``tools`` or ``response_format`` if xgrammar cannot use a schema."""
    xgr = _xgrammar()
    import json

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


class Grammars:
    """The grammar compiler of one tokenizer (its token table built once) with a compile cache."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int]) -> None:
        xgr = _xgrammar()
        self.info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids)
        )
        self.compiler = xgr.GrammarCompiler(self.info)
        self.token_bytes: list[bytes] = list(self.info.decoded_vocab)
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    def compile(self, spec: OutputSpec) -> xgrammar.CompiledGrammar:
        """The compiled grammar of ``spec`` (cached by its structural tag)."""
        tag = structural_tag(spec)
        key = tag.model_dump_json()
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self.compiler.compile_grammar(tightened_grammar(tag))
            return self._cache[key]


JSON_DIGITS = 16
"""Most digits in the integer part, the fraction and the exponent of a JSON number: float64
precision, and no runaway digits (``11.78888888…`` until the length limit, another common
failure of small models)."""
_LOOSE_STRING_CHARACTER = r"[^\"\\\r\n]"
_STRICT_STRING_CHARACTER = r"[^\0-\x1f\"\\\r\n]"
_NUMBER_BOUNDS = (
    ("[0-9]*", f"[0-9]{{0, {JSON_DIGITS - 1}}}"),
    ("basic_number_digits{1, -1}", f"basic_number_digits{{1, {JSON_DIGITS}}}"),
)


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


@dataclass(frozen=True)
class Constraint:
    """What one request carries: its compiled grammar, and where its constrained spans are.

    ``grammar`` ``None``: nothing is masked (``constrained=False``); ``whole``: the whole answer
    is a span (a response format, or tool calls under ``"required"``), else the tool-call blocks
    are; ``alignment``: what the method does inside spans.
    """

    grammar: Any = None
    whole: bool = False
    alignment: ConstrainedAlignment = "steer"
    token_bytes: Sequence[bytes] = ()

    def protect(self, text: str) -> str:
        """``text`` with its constrained spans blanked: stop strings are not searched there."""
        return "\0" * len(text) if self.whole else protect_calls(text)

    def start(self) -> ConstraintState | None:
        """Fresh per-request decoding state, or ``None`` when nothing is masked."""
        return None if self.grammar is None else ConstraintState(self)


class ConstraintState:
    """A request's grammar matcher, and where decoding is: inside a constrained span or not.

    Tool-call blocks are followed by their bytes; once an open call has written exactly the body
    of an earlier call of the same answer, ``finished`` is set, without waiting for the block
    to close (small models otherwise repeat a call until the length limit; the parser drops
    the unclosed repeat).
    """

    _OPEN = CALL_OPEN.encode()
    _CLOSE = CALL_CLOSE.encode()

    def __init__(self, constraint: Constraint) -> None:
        self.constraint = constraint
        self.matcher = _xgrammar().GrammarMatcher(constraint.grammar)
        self.bitmask_width = (constraint.grammar.tokenizer_info.vocab_size + 31) // 32
        self.repeated_call = False
        self._in_call = False
        self._buffer = b""
        self._bodies: set[bytes] = set()

    @property
    def in_span(self) -> bool:
        """Whether the next token is inside a constrained span."""
        return self.constraint.whole or self._in_call

    @property
    def steers(self) -> bool:
        """Whether the method's scores are used at this step."""
        return self.constraint.alignment == "steer" or not self.in_span

    @property
    def finished(self) -> bool:
        """The grammar ended (a stop token was accepted) or the answer repeated a call."""
        return self.repeated_call or self.matcher.is_terminated()

    def accept(self, token: int) -> None:
        """Advance the grammar with the chosen token, and the span tracking with its bytes."""
        if not self.matcher.accept_token(token):
            raise RuntimeError(f"the grammar rejected token {token}, which its own mask allowed")
        if token >= len(self.constraint.token_bytes):
            return
        self._buffer += self.constraint.token_bytes[token]
        marker = self._CLOSE if self._in_call else self._OPEN
        at = self._buffer.find(marker)
        if at == -1:
            if self._in_call:
                self.repeated_call = self._buffer.strip() in self._bodies
            else:
                self._buffer = self._buffer[-len(self._OPEN) :]
            return
        if self._in_call:
            self._bodies.add(self._buffer[:at].strip())
        self._in_call = not self._in_call
        self._buffer = self._buffer[at + len(marker) :]


_BITS = torch.arange(32, dtype=torch.int32)


def _mask_(scores: torch.Tensor, bitmask: torch.Tensor) -> None:
    """Set ``scores [N, V]`` to -inf where xgrammar's int32 bitmask ``[N, ceil(V'/32)]`` has a 0.

    Tokens beyond the bitmask (a model vocabulary padded past the tokenizer's) are masked too.
    On CPU xgrammar's own kernel does it; elsewhere the bits are unpacked with torch.
    """
    vocab = scores.shape[-1]
    covered = min(vocab, bitmask.shape[-1] * 32)
    if scores.device.type == "cpu" and scores.dtype == torch.float32:
        _xgrammar().apply_token_bitmask_inplace(scores, bitmask, vocab_size=covered)
    else:
        bits = bitmask.to(scores.device)
        allowed = ((bits.unsqueeze(-1) >> _BITS.to(scores.device)) & 1).bool().flatten(1)[:, :covered]
        scores[:, :covered].masked_fill_(~allowed, float("-inf"))
    if covered < vocab:
        scores[:, covered:] = float("-inf")


def constrain_scores(
    scores: torch.Tensor, signal: torch.Tensor, logits: torch.Tensor, states: Sequence[ConstraintState | None]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each constrained request's scores ``[B, V]`` to what its grammar allows.

    In a span under ``constrained_alignment="off"`` the scores are the first row's log-probs
    (and the signal 0). When the method left no allowed token a finite score (PAD's top-k, AAD's
    plausible set, the linear nucleus may exclude all of them), the first row's log-probs over
    the allowed tokens are used, so a grammar always finds a valid token.
    """
    active = [index for index, state in enumerate(states) if state is not None]
    if not active:
        return scores, signal
    width = max(state.bitmask_width for state in states if state is not None)
    bitmask = torch.zeros((len(active), width), dtype=torch.int32)
    for slot, index in enumerate(active):
        states[index].matcher.fill_next_token_bitmask(bitmask, slot)  # type: ignore[union-attr]
    rows = torch.tensor(active, device=scores.device)
    masked = scores[rows]
    plain_rows = [slot for slot, index in enumerate(active) if not states[index].steers]  # type: ignore[union-attr]
    if plain_rows:
        plain = torch.tensor(plain_rows, device=scores.device)
        masked[plain] = torch.log_softmax(logits[rows[plain], 0], dim=-1)
        signal = signal.clone()
        signal[rows[plain]] = 0.0
    _mask_(masked, bitmask)
    dead = masked.max(dim=-1).values == float("-inf")
    if bool(dead.any()):
        fallback = torch.log_softmax(logits[rows[dead], 0], dim=-1)
        _mask_(fallback, bitmask[dead.cpu()])
        masked[dead] = fallback
    if len(active) == scores.shape[0]:
        return masked, signal
    return scores.index_copy(0, rows, masked), signal


def advance(states: Sequence[ConstraintState | None], tokens: torch.Tensor) -> None:
    """Advance every constrained request's grammar with its chosen token."""
    if any(state is not None for state in states):
        for state, token in zip(states, tokens.tolist(), strict=True):
            if state is not None:
                state.accept(token)
