"""Incremental detokenisation with stop strings: exact text deltas, stop strings cut out.

The streamed deltas and the final text come from the same object, so their concatenation is
the final text by construction. Text that might be the start of a stop string, or that ends
in an incomplete multi-byte character, is held back until it is decided.

Stop strings live in a trie, and each token only looks at the text that changed plus the
longest stop string's length before it: the cost per token grows with the longest stop
string, not with how many there are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from transformers import PreTrainedTokenizerBase

_INCOMPLETE = "\ufffd"
_END = None
"""Trie key marking that the path to a node spells a whole stop string (stored as its value)."""


class _StopTrie:
    """The stop strings as a character trie."""

    def __init__(self, stop_strings: Sequence[str]) -> None:
        self.root: dict = {}
        self.longest = max((len(stop) for stop in stop_strings), default=0)
        for stop in stop_strings:
            node = self.root
            for char in stop:
                node = node.setdefault(char, {})
            node[_END] = stop

    def first_match(self, text: str, start: int) -> tuple[int, str] | None:
        """The leftmost stop string in ``text`` beginning at or after ``start``; the shortest there.

        The stop strings matching at one position are prefixes of each other, so the shortest
        is also the alphabetically first.
        """
        for position in range(start, len(text)):
            node = self.root
            for char in text[position : position + self.longest]:
                node = node.get(char)
                if node is None:
                    break
                if _END in node:
                    return position, node[_END]
        return None

    def pending_suffix(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that a stop string could still complete."""
        for position in range(max(0, len(text) - self.longest + 1), len(text)):
            node = self.root
            for char in text[position:]:
                node = node.get(char)
                if node is None:
                    break
            else:
                if any(key is not _END for key in node):
                    return len(text) - position
        return 0


def _common_prefix_length(old: str, new: str) -> int:
    """How many leading characters ``old`` and ``new`` share (string comparisons run in C)."""
    if new.startswith(old):
        return len(old)
    low, high = 0, min(len(old), len(new))
    while low < high:
        middle = (low + high + 1) // 2
        if new.startswith(old[:middle]):
            low = middle
        else:
            high = middle - 1
    return low


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
        self._stops = _StopTrie(stop_strings)
        self._protect = protect
        self._ids: list[int] = []
        self._decoded = ""
        self.text = ""
        self.stopped_by: str | None = None

    def add(self, token_id: int) -> str:
        """Append one generated token; return the text that is now certain (maybe empty)."""
        self._ids.append(token_id)
        if self.stopped_by is not None:
            return ""
        full = self._decode()
        searched = full if self._protect is None or not self._stops.longest else self._protect(full)
        cut = self._first_stop(searched)
        if cut is not None:
            return self._emit(full[:cut])
        if full.endswith(_INCOMPLETE):
            return ""
        return self._emit(full[: len(full) - self._stops.pending_suffix(searched)])

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
        """Where the first stop string begins in ``full``, searching only where it could be new.

        The text decoded before held no stop string, so a match must overlap what changed.
        """
        if not self._stops.longest:
            return None
        changed = _common_prefix_length(self._decoded, full)
        self._decoded = full
        match = self._stops.first_match(full, max(0, changed - self._stops.longest + 1))
        if match is None:
            return None
        self.stopped_by = match[1]
        return match[0]
