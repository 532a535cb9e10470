"""Incremental detokenisation with stop strings: exact text deltas, stop strings cut out.

The streamed deltas and the final text come from the same object, so their concatenation is
the final text by construction. Text that might be the start of a stop string, or that ends
in an incomplete multi-byte character, is held back until it is decided.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from transformers import PreTrainedTokenizerBase

_INCOMPLETE = "\ufffd"


class TextAssembler:
    """Turns a growing list of token ids into text deltas, cutting at the first stop string."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        stop_strings: Sequence[str] = (),
        protect: Callable[[str], str] | None = None,
    ) -> None:
        """Hold ``stop_strings``; ``protect(text)`` blanks what they must not cut (same length).

        Protected are tool calls and structured answers, whose end the grammar decides.
        """
        self._tokenizer = tokenizer
        self._stop_strings = tuple(stop_strings)
        self._protect = protect
        self._ids: list[int] = []
        self.text = ""
        self.stopped_by: str | None = None

    def add(self, token_id: int) -> str:
        """Append one generated token; return the text that is now certain (maybe empty)."""
        self._ids.append(token_id)
        full = self._decode()
        searched = full if self._protect is None or not self._stop_strings else self._protect(full)
        cut = self._first_stop(searched)
        if cut is not None:
            return self._emit(full[:cut])
        if full.endswith(_INCOMPLETE):
            return ""
        return self._emit(full[: len(full) - self._pending_stop_prefix(searched)])

    def finish(self) -> str:
        """Flush what was held back once generation ends without a stop string."""
        if self.stopped_by is not None:
            return ""
        return self._emit(self._decode())

    def _decode(self) -> str:
        return self._tokenizer.decode(self._ids, skip_special_tokens=True)

    def _emit(self, certain: str) -> str:
        delta = certain[len(self.text) :]
        self.text += delta
        return delta

    def _first_stop(self, full: str) -> int | None:
        hits = [(full.find(stop), stop) for stop in self._stop_strings if stop in full]
        if not hits:
            return None
        index, stop = min(hits)
        self.stopped_by = stop
        return index

    def _pending_stop_prefix(self, full: str) -> int:
        """Length of the longest suffix of ``full`` that a stop string could still complete."""
        longest = 0
        for stop in self._stop_strings:
            for size in range(min(len(stop) - 1, len(full)), longest, -1):
                if full.endswith(stop[:size]):
                    longest = size
                    break
        return longest
