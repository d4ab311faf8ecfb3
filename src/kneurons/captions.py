"""Caption text: building the synthetic captions and deciding whether a caption mentions a knowledge target."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_WORD = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    """Lower-cased alphabetic words of a text; punctuation and digits separate words."""
    return _WORD.findall(text.lower())


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


def mentions(caption: str, name: str, synonyms: Iterable[str] = ()) -> bool:
    """Whether ``caption`` mentions ``name`` (or one of its synonyms) as whole words.

    Multi-word names match as consecutive words ("fire hydrant"); the last word may be plural ("fire hydrants").
    Matching is on words, so "cat" never matches inside "category".
    """
    tokens = words(caption)
    for phrase in (name, *synonyms):
        target = words(phrase)
        if not target:
            continue
        head, last = target[:-1], _plural_forms(target[-1])
        n = len(target)
        for i in range(len(tokens) - n + 1):
            if tokens[i : i + n - 1] == head and tokens[i + n - 1] in last:
                return True
    return False


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
