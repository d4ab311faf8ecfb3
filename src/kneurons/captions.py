"""Caption text: building the synthetic captions and deciding whether a caption mentions a knowledge target."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_WORD = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    """Lower-cased alphabetic words of a text; punctuation and digits separate words."""
    return _WORD.findall(lowered(text))


def _plural_forms(word: str) -> set[str]:
    """The word and its regular English plurals (bus -> buses, strawberry -> strawberries, cake -> cakes)."""
    forms = {word, word + "s", word + "es"}
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        forms.add(word[:-1] + "ies")
    if word.endswith("f"):
        forms.add(word[:-1] + "ves")
    if word.endswith("fe"):
        forms.add(word[:-2] + "ves")
    return forms


def _mention_pattern(phrase: str) -> re.Pattern | None:
    target = words(phrase)
    if not target:
        return None
    last = "|".join(sorted(_plural_forms(target[-1]), key=len, reverse=True))
    body = "[^a-z]+".join([*map(re.escape, target[:-1]), f"(?:{last})"])
    return re.compile(f"(?<![a-z]){body}(?![a-z])")


def lowered(text: str) -> str:
    """``text`` lower-cased character by character, each to one character, so that every offset stays: "İ"
    (whose lower case is "i" and a combining dot) becomes "i", "ẞ" "ß"."""
    return "".join(ch.lower()[0] for ch in text)


def mention_span(caption: str, name: str, synonyms: Iterable[str] = ()) -> tuple[int, int] | None:
    """Character span (start, end) of the first mention of ``name`` (or a synonym) in ``caption``, or None.

    Multi-word names match as consecutive words ("fire hydrant"); the last word may be plural ("fire hydrants").
    Matching is on whole words, so "cat" never matches inside "category". The span indexes ``caption`` itself: the
    caption is lower-cased one character at a time, each to one character (``lowered``), so offsets never shift.
    """
    text = lowered(caption)
    spans = [m.span() for p in map(_mention_pattern, (name, *synonyms)) if p and (m := p.search(text))]
    return min(spans) if spans else None


def mentions(caption: str, name: str, synonyms: Iterable[str] = ()) -> bool:
    """Whether ``caption`` mentions ``name`` or one of its synonyms (see mention_span)."""
    return mention_span(caption, name, synonyms) is not None


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def describe(background: str, object_names: Sequence[str]) -> str:
    """The synthetic caption continuation: "grassy field with a bear , a bus and an airplane ."

    Objects are listed in the given order (the data set passes category-id order); with no objects the
    caption names the background alone.
    """
    if not object_names:
        return f"{background} ."
    items = [f"{_article(n)} {n}" for n in object_names]
    listed = items[0] if len(items) == 1 else " , ".join(items[:-1]) + " and " + items[-1]
    return f"{background} with {listed} ."
