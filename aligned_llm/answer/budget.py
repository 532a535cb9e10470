"""The token budget of a structured answer: the fewest tokens that can still complete it.

A grammar often forces what comes next (a call's opening markup and tool name, the closing
``}`` and markup of a call): xgrammar's ``find_jump_forward_string`` gives that forced text.
Every token writes whole bytes, so the fewest tokens that write a text are found by a shortest
path over its byte positions (:meth:`TokenSpelling.fewest_tokens`), the last token being free to
run past the text's end. That count is a lower bound of the tokens the answer still needs:
when it exceeds the tokens left of ``max_new_tokens``, the answer can no longer complete, and
decoding it further only spends forwards on an answer that will be cut.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence


class TokenSpelling:
    """A vocabulary by its tokens' bytes: how few tokens can write a given text."""

    def __init__(self, token_bytes: Sequence[bytes]) -> None:
        pieces = {piece for piece in token_bytes if piece}
        self._pieces = frozenset(pieces)
        self._sorted = sorted(pieces)
        self._longest = max(map(len, pieces), default=1)

    def _starts_with(self, text: bytes) -> bool:
        """Whether some token's bytes start with ``text``."""
        index = bisect_left(self._sorted, text)
        return index < len(self._sorted) and self._sorted[index].startswith(text)

    def fewest_tokens(self, text: bytes) -> int:
        """The fewest tokens whose bytes, one after another, start with ``text`` (0 for no text).

        Every token but the last must end inside ``text``; the last may run past it. When no
        tokens can write ``text``, its length is returned (still a lower bound: nothing fits).
        """
        size = len(text)
        if size == 0:
            return 0
        unreachable = size + 1
        best = [0] + [unreachable] * size
        fewest = unreachable
        for start in range(size):
            if best[start] == unreachable:
                continue
            if self._starts_with(text[start:]):
                fewest = min(fewest, best[start] + 1)
            for length in range(1, min(self._longest, size - start - 1) + 1):
                if text[start : start + length] in self._pieces:
                    best[start + length] = min(best[start + length], best[start] + 1)
        return size if fewest == unreachable else fewest
