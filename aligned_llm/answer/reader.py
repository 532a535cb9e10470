"""Reading an answer back: tokens' text split into prose and tool calls, the structured value parsed.

The same reader serves streaming and the final result, so the streamed prose concatenates to
``result.text`` and the streamed calls are ``result.tool_calls``. Text that may be the start of
a call block is held back; a call is sent whole (one :class:`ToolCallDelta`) when its block
closes (at the end of the answer for formats whose block runs to the end). Markup never
reaches the prose: a block still open at the end of the answer (cut by ``max_new_tokens``)
keeps only its complete calls. A call that repeats one of the same answer is dropped, and so
is one that repeats a call already made in this turn of the conversation: when nothing else is
left, the reader asks for a prose answer instead (:attr:`AnswerReader.wants_prose`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from aligned_llm.answer.formats import ToolFormat
from aligned_llm.answer.formats.base import ParsedCall
from aligned_llm.answer.formats.generic import ANSWER_OPENING, DECISION_PREFIX
from aligned_llm.answer.history import call_key, new_call_id
from aligned_llm.answer.spec import ResponseFormat, ToolSpec, is_json
from aligned_llm.result import GenerationResult, StreamDelta, ToolCall, ToolCallDelta

E = TypeVar("E")


@dataclass
class CallSplitter:
    """Splits generated text, fed in deltas, into prose and the calls of one tool format.

    Whitespace at the ends of the answer and around calls is not prose and is dropped.
    ``earlier``: calls already made in this turn (``(name, arguments)``), never made again.
    """

    fmt: ToolFormat
    tools: Sequence[ToolSpec] = ()
    earlier: Sequence[ParsedCall] = ()
    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    repeated: int = 0
    """Calls dropped because this turn already made them."""
    _pending: str = ""
    _body: str | None = None
    _held: str = ""
    _gap: str = ""
    _boundary: bool = True

    def feed(self, delta: str) -> StreamDelta:
        """Take the next piece of generated text; return what is now decided."""
        prose: list[str] = []
        pieces: list[ToolCallDelta] = []
        opening, closing = self.fmt.open, self.fmt.close
        self._pending += delta
        while self._pending:
            if self._body is None:
                start = self._pending.find(opening)
                if start == -1:
                    keep = _partial_suffix(self._pending, opening)
                    prose.append(self._prose(self._pending[: len(self._pending) - keep]))
                    self._pending = self._pending[len(self._pending) - keep :]
                    break
                prose.append(self._prose(self._pending[:start]))
                self._pending = self._pending[start if self.fmt.open_in_body else start + len(opening) :]
                self._body, self._gap, self._held = "", self._held, ""
                continue
            if closing is None:
                self._body, self._pending = self._body + self._pending, ""
                break
            body = self._body + self._pending
            close = body.find(closing)
            if close == -1:
                self._body, self._pending = body, ""
                break
            self._body, self._pending = body[:close], body[close + len(closing) :]
            prose.append(self._prose(self._close_block(closed=True, pieces=pieces)))
        text = "".join(prose)
        self.text += text
        return StreamDelta(text, tuple(pieces))

    def finish(self) -> StreamDelta:
        """End of generation: settle an open block and flush held-back text."""
        pieces: list[ToolCallDelta] = []
        block = "" if self._body is None else self._close_block(closed=self.fmt.close is None, pieces=pieces)
        prose = self._prose(block + self._pending)
        self._pending = ""
        self.text += prose
        return StreamDelta(prose, tuple(pieces))

    def _prose(self, chunk: str) -> str:
        """The part of a prose chunk to emit now: whitespace at a boundary or at the end is held."""
        text = self._held + chunk
        if self._boundary:
            text = text.lstrip()
        emitted = text.rstrip()
        self._held = text[len(emitted) :]
        self._boundary = self._boundary and not emitted
        return emitted

    def _close_block(self, closed: bool, pieces: list[ToolCallDelta]) -> str:
        """Turn the open block into calls (appending their deltas to ``pieces``); return its prose, if any."""
        body, self._body = self._body or "", None
        parsed = self.fmt.parse_block(body, self.tools) if closed else None
        if parsed is None:
            complete = self.fmt.complete_calls(body if self.fmt.open_in_body else self.fmt.open + body, self.tools)
            if closed and not complete and self.fmt.close is not None:
                return self._gap + self.fmt.open + body + self.fmt.close
            parsed = complete
        self._boundary = True
        earlier = {call_key(name, arguments) for name, arguments in self.earlier}
        for name, arguments in parsed:
            if any(call.name == name and call.arguments == arguments for call in self.calls):
                continue
            if call_key(name, arguments) in earlier:
                self.repeated += 1
                continue
            call = ToolCall(new_call_id(), name, arguments)
            pieces.append(ToolCallDelta(len(self.calls), call.id, name, json.dumps(arguments, ensure_ascii=False)))
            self.calls.append(call)
        return ""


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


class AnswerReader:
    """Reads one request's answer as it streams: prose, tool calls, and the structured value.

    ``fmt``: the answer may hold calls in this format (they are taken out of the text);
    ``response``: the answer's JSON is parsed into ``result.parsed``.
    """

    def __init__(
        self,
        fmt: ToolFormat | None,
        tools: Sequence[ToolSpec] = (),
        response: ResponseFormat | None = None,
        earlier: Sequence[ParsedCall] = (),
        *,
        holds: bool = False,
        must_complete: bool = False,
    ) -> None:
        self.splitter = None if fmt is None else CallSplitter(fmt, tools, earlier)
        self.holds = holds
        """Whether nothing is sent before the end: the answer is the decision's envelope (``{"…``), never prose; only
        its complete calls are kept."""
        self.response = response
        self.must_complete = must_complete
        """Whether the grammar ends the answer only when it is complete, or early when it can no longer complete
        (``answer.constraint``): an incomplete answer that stopped was cut by ``max_new_tokens``."""
        self.raw = ""
        """The generated text as it came (markup included)."""
        self.wants_prose = False
        """Whether the answer chose to answer in prose (or only repeated calls): its prose comes from a follow-up."""

    def feed(self, delta: str) -> StreamDelta:
        """The next text delta of the generation, split into prose and call pieces."""
        self.raw += delta
        if self.holds:
            return StreamDelta("")
        return StreamDelta(delta) if self.splitter is None else self.splitter.feed(delta)

    def finish(self, result: GenerationResult) -> tuple[StreamDelta, GenerationResult]:
        """The last pieces, and ``result`` with prose text, tool calls, parsed value and finish reason."""
        if self.splitter is None:
            tail, text, calls = StreamDelta(""), result.text, ()
        elif self.splitter.fmt.decides and self.raw.strip() == ANSWER_OPENING:
            tail, text, calls = StreamDelta(""), "", ()
            self.wants_prose = result.finish_reason == "stop"
        else:
            held = self.splitter.feed(self.raw) if self.holds else StreamDelta("")
            tail = self.splitter.finish()
            tail = StreamDelta(held.text + tail.text, held.tool_calls + tail.tool_calls)
            text, calls = self.splitter.text, tuple(self.splitter.calls)
            if self.holds and self.raw.lstrip().startswith(DECISION_PREFIX):
                tail, text = StreamDelta("", tail.tool_calls), ""
            only_repeats = self.splitter.repeated > 0 and not calls and not text.strip()
            self.wants_prose = result.finish_reason == "stop" and only_repeats
        parsed = self.response.parse(text) if self.response is not None and not calls else None
        reason = "tool_calls" if calls and result.finish_reason == "stop" else result.finish_reason
        if self.must_complete and reason == "stop" and not calls and not is_json(text):
            reason = "length"
        return tail, replace(result, text=text, tool_calls=calls, parsed=parsed, finish_reason=reason)


class AnswerReading:
    """The answers of one submission read as their events arrive: one :class:`AnswerReader` per request.

    Each event's ``delta`` becomes its prose part and ``tool_calls`` its call pieces; the final
    event's ``result`` is rewritten by the reader. When a reader wants a prose answer,
    ``follow_up(index)`` submits it and its events, arriving later under the same index, are
    read as prose (their result counts the tokens of both parts).
    """

    def __init__(
        self,
        readers: Callable[[int], AnswerReader],
        follow_up: Callable[[int], None] | None = None,
        follow_up_readers: Callable[[int], AnswerReader] | None = None,
    ) -> None:
        self._readers = readers
        self._follow_up = follow_up
        self._follow_up_reader = follow_up_readers or (lambda _index: AnswerReader(None))
        self._by_index: dict[int, AnswerReader] = {}
        self._spent: dict[int, GenerationResult] = {}

    def __call__(self, events: Iterable[E]) -> list[E]:
        read: list[E] = []
        for event in events:
            index = event.index  # type: ignore[attr-defined]
            if index not in self._by_index:
                self._by_index[index] = self._readers(index)
            reader = self._by_index[index]
            piece = reader.feed(event.delta)  # type: ignore[attr-defined]
            result = event.result  # type: ignore[attr-defined]
            swallowed = False
            if result is not None:
                tail, result = reader.finish(result)
                piece = StreamDelta(piece.text + tail.text, piece.tool_calls + tail.tool_calls)
                if reader.wants_prose and self._follow_up is not None and index not in self._spent:
                    self._spent[index] = result
                    self._by_index[index] = self._follow_up_reader(index)
                    self._follow_up(index)
                    result, swallowed = None, True
                elif index in self._spent:
                    first = self._spent[index]
                    result = replace(
                        result,
                        output_tokens=result.output_tokens + first.output_tokens,
                        call_log_odds=first.call_log_odds,
                    )
            if swallowed and not piece.text and not piece.tool_calls:
                continue
            read.append(replace(event, delta=piece.text, tool_calls=piece.tool_calls, result=result))  # type: ignore[type-var]
        return read
