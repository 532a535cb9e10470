"""Built-in checkers for verifiable principles: length, case, punctuation, language, opening word, list shape.

Each checker is a callable ``checker(text) -> bool`` with a ``name`` (for tables and plots);
pass one as a sweep's ``adherence`` and a point's adherence is the share of its answers that
pass. They test the letter of a principle, not whether the answer is good: pair them with the
sweep's fluency measures. Words are runs of letters, digits, apostrophes and hyphens.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "LANGUAGE_WORDS",
    "Checker",
    "bullet_list",
    "checker_from_spec",
    "detect_language",
    "ends_with",
    "in_language",
    "lowercase",
    "max_words",
    "min_words",
    "no_commas",
    "starts_with",
    "uppercase",
    "words",
]

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_LIST_ITEM = re.compile(r"^\s*(?:[-*•+]|\d{1,3}[.)])\s+\S")
_OPENING_NOISE = " \t\r\n\"'“”‘’«»*_#>`([{-"


@dataclass(frozen=True)
class Checker:
    """A named pass/fail test of one answer's text."""

    name: str
    test: Callable[[str], bool]

    def __call__(self, text: str) -> bool:
        return bool(self.test(text))

    def __repr__(self) -> str:
        return f"Checker({self.name!r})"


def words(text: str) -> list[str]:
    """The words of ``text`` (runs of letters and digits, joined by apostrophes or hyphens)."""
    return _WORD.findall(text)


def max_words(limit: int) -> Checker:
    """At most ``limit`` words, and at least one."""
    _positive("limit", limit)
    return Checker(f"at most {limit} words", lambda text: 0 < len(words(text)) <= limit)


def min_words(limit: int) -> Checker:
    """At least ``limit`` words."""
    _positive("limit", limit)
    return Checker(f"at least {limit} words", lambda text: len(words(text)) >= limit)


def lowercase() -> Checker:
    """Has letters, and none of them is upper case."""
    return Checker("lowercase only", lambda text: any(c.isalpha() for c in text) and text == text.lower())


def uppercase() -> Checker:
    """Has letters, and none of them is lower case."""
    return Checker("capitals only", lambda text: any(c.isalpha() for c in text) and text == text.upper())


def no_commas() -> Checker:
    """Not empty, and no comma (ASCII or full-width)."""
    return Checker("no commas", lambda text: bool(text.strip()) and "," not in text and "，" not in text)


def ends_with(phrase: str) -> Checker:
    """The text, stripped of trailing spaces, ends with ``phrase`` (case-insensitive)."""
    wanted = phrase.strip().lower()
    if not wanted:
        raise ValueError("ends_with needs a non-empty phrase")
    return Checker(f"ends with {phrase.strip()!r}", lambda text: text.strip().lower().endswith(wanted))


def starts_with(word: str) -> Checker:
    """The first word is ``word`` (case-insensitive), after any quotes, markdown marks or spaces."""
    wanted = word.strip().lower()
    if not wanted or len(words(wanted)) != 1:
        raise ValueError(f"starts_with needs one word, got {word!r}")

    def test(text: str) -> bool:
        found = words(text.lstrip(_OPENING_NOISE)[: 4 * len(wanted) + 40])
        return bool(found) and found[0].lower() == wanted

    return Checker(f"starts with {word.strip()!r}", test)


def bullet_list(items: int | None = None, *, at_least: int | None = None) -> Checker:
    """A list: exactly ``items`` list lines, or at least ``at_least`` (default: at least 2).

    A list line starts (after spaces) with ``-``, ``*``, ``•``, ``+`` or a number and ``.``/``)``,
    then a space and text: markdown's bullets and numbered items.
    """
    if items is not None and at_least is not None:
        raise ValueError("bullet_list takes items or at_least, not both")
    if items is not None:
        _positive("items", items)
        return Checker(f"exactly {items} list items", lambda text: _list_items(text) == items)
    minimum = 2 if at_least is None else at_least
    _positive("at_least", minimum)
    return Checker(f"at least {minimum} list items", lambda text: _list_items(text) >= minimum)


def _list_items(text: str) -> int:
    return sum(1 for line in text.splitlines() if _LIST_ITEM.match(line))


def _vocabulary(spaced: str) -> frozenset[str]:
    return frozenset(spaced.split())


LANGUAGE_WORDS: dict[str, frozenset[str]] = {
    "en": _vocabulary("the of and to a in is it that for you was with on as are be this have not but at by from "
                      "they or an which he she we can will what there"),
    "fr": _vocabulary("le la les de des du un une et est en que qui dans pour pas sur au aux ce cette il elle nous "
                      "vous ils sont avec plus ou son sa"),
    "de": _vocabulary("der die das und ist nicht ein eine zu den von mit sich des auf für im dem es ich sie wir auch "
                      "als an werden aus er wie oder"),
    "es": _vocabulary("el la los las de y que en un una es por con para no se del al lo como más pero sus le ya "
                      "o este esta son muy"),
    "it": _vocabulary("il lo la i gli le di e che un una è per non con del della in sono come più ma si anche "
                      "questo alla nel al"),
    "pt": _vocabulary("o a os as de e que em um uma é para com não do da no na por mais se como mas dos das ao "
                      "são você isso"),
    "nl": _vocabulary("de het een en van is dat in op te niet met voor zijn er die aan ook als maar om dan bij "
                      "door wordt uit"),
}  # fmt: skip
"""The commonest function words of each language :func:`in_language` can tell apart."""


def detect_language(text: str, minimum_hits: int = 2) -> str | None:
    """The language whose function words occur most often in ``text``, or ``None`` when unsure.

    A heuristic, documented as such: it counts the words of ``text`` found in each language's
    list of ~30 function words (:data:`LANGUAGE_WORDS`), and answers the language with the most
    hits if it has at least ``minimum_hits`` and strictly more than any other. Short texts,
    lists of names and code are ``None``.
    """
    lowered = [word.lower() for word in words(text)]
    hits = {code: sum(word in vocabulary for word in lowered) for code, vocabulary in LANGUAGE_WORDS.items()}
    ranked = sorted(hits.items(), key=lambda item: item[1], reverse=True)
    (best, count), (_, runner_up) = ranked[0], ranked[1]
    return best if count >= minimum_hits and count > runner_up else None


def in_language(code: str) -> Checker:
    """The answer is in language ``code`` (one of :data:`LANGUAGE_WORDS`), by :func:`detect_language`."""
    if code not in LANGUAGE_WORDS:
        raise ValueError(f"in_language knows {', '.join(LANGUAGE_WORDS)}, got {code!r}")
    return Checker(f"in language {code!r}", lambda text: detect_language(text) == code)


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


CHECKER_FACTORIES: dict[str, Callable[..., Checker]] = {
    "max-words": max_words,
    "min-words": min_words,
    "lowercase": lowercase,
    "uppercase": uppercase,
    "no-commas": no_commas,
    "ends-with": ends_with,
    "starts-with": starts_with,
    "bullets": bullet_list,
    "language": in_language,
}
"""Checkers by the names the CLI and the panel use (``max-words:10``, ``language:fr``, …)."""

_INTEGER_ARGUMENT = {"max-words", "min-words", "bullets"}


def checker_from_spec(spec: str) -> Checker:
    """A checker from ``NAME`` or ``NAME:ARGUMENT`` (``lowercase``, ``max-words:10``, ``starts-with:Yes``)."""
    name, _, argument = spec.partition(":")
    name = name.strip()
    if name not in CHECKER_FACTORIES:
        raise ValueError(f"unknown checker {name!r}; the checkers are {', '.join(CHECKER_FACTORIES)}")
    factory = CHECKER_FACTORIES[name]
    takes_argument = name in _INTEGER_ARGUMENT or name in ("ends-with", "starts-with", "language")
    if not argument:
        if takes_argument and name != "bullets":
            raise ValueError(f"checker {name!r} needs an argument: {name}:VALUE")
        return factory()
    if not takes_argument:
        raise ValueError(f"checker {name!r} takes no argument, got {argument!r}")
    if name in _INTEGER_ARGUMENT:
        try:
            return factory(int(argument))
        except ValueError:
            raise ValueError(f"checker {name!r} needs a whole number, got {argument!r}") from None
    return factory(argument)
