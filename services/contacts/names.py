# ruff: noqa: RUF001 (Cyrillic and accented letters are the point of this module)
"""Names as the duplicate search compares them: normalized to a key, then scored with rapidfuzz.

The key (`contacts.name_key`) is case folded, Cyrillic transliterated, accents stripped,
punctuation dropped, spelling variants that transliterations disagree on made one (below), and
its words sorted. So "Иван Петров", "PETROV, Ivan" and "Ivan Petrov" share one key, and
"María García" is "garcia maria". Keys are for comparing, never shown.

`name_score` then compares two keys token by token, whatever their order: each token of the
shorter name is paired with its most similar token of the other (an initial pairs with a token
it begins), and the pairs' similarities are averaged: every word counts the same, so a long
surname in common does not drown different first names. Tokens left over (a
middle name, a patronymic, a second surname) cost a little when both names have a first and a
last name, and a lot when one name is a single word, which says little about who it is.
"""

from __future__ import annotations

import unicodedata

from rapidfuzz.distance import OSA

# Russian, Ukrainian and Belarusian letters, the way passports and people spell them in Latin
# (close enough: the score absorbs "Sergey"/"Sergei").
CYRILLIC = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh", "з": "z",
    "и": "i", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r",
    "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh",
    "щ": "shch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu", "я": "ya",
    "і": "i", "ї": "yi", "є": "ye", "ґ": "g", "ў": "u",
}  # fmt: skip
# Latin letters that Unicode does not decompose into a base letter and an accent.
LATIN = {
    "ß": "ss",
    "æ": "ae",
    "œ": "oe",
    "ø": "o",
    "ł": "l",
    "đ": "d",
    "ð": "d",
    "þ": "th",
    "ı": "i",
}
# Dropped, not split on: "O'Brien" is one name.
JOINERS = {"'", "’", "ʼ", "`"}
TABLE = str.maketrans({**CYRILLIC, **LATIN, **dict.fromkeys(JOINERS, "")})
# Spellings of one sound that transliterations and languages disagree on, made one so that
# "Yuliya", "Iuliia" and "Julija", or "Aleksandr" and "Alexandr", come out alike; doubled
# letters are collapsed after ("Anna"/"Ana", "Philipp"/"Filip").
SPELLINGS = (("kh", "h"), ("ph", "f"), ("x", "ks"), ("w", "v"), ("j", "i"), ("y", "i"))
# The letters a key's words are made of (those replaced above are gone): the candidate index
# looks words up with one of these changed, added or dropped.
KEY_LETTERS = "abcdefghiklmnopqrstuvz"

KEY_MAX = 300
INITIAL = 80.0  # an initial and a name it begins: likely the same, never certain
LEFTOVER = 0.95  # per token only one of two full names has (a middle name)
LEFTOVER_OF_ONE_WORD = 0.6  # per token beyond a one-word name: "Ivan" is not "Ivan Petrov"


def name_key(name: str) -> str:
    """The normalized, order-free form of a name: lowercase ASCII-ish tokens, sorted."""
    text = unicodedata.normalize("NFKC", name).casefold().translate(TABLE)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = "".join(c if c.isalnum() else " " for c in text)
    for spelled, as_ in SPELLINGS:
        text = text.replace(spelled, as_)
    text = "".join(c for i, c in enumerate(text) if i == 0 or c != text[i - 1])
    return " ".join(sorted(text.split()))[:KEY_MAX].strip()


def _pair(a: str, b: str) -> float:
    if len(a) == 1 or len(b) == 1:  # an initial: "I." for "Ivan"
        return (100.0 if a == b else INITIAL) if a[0] == b[0] else 0.0
    # Edits, two swapped letters counting as one, over the longer word's length: stricter than
    # rapidfuzz's `ratio` on long words that merely end alike ("Krasilnikova", "Sitnikova").
    return OSA.normalized_similarity(a, b) * 100


def name_score(a: str, b: str) -> float:
    """How similar two name keys are, 0-100, whatever the order of their words."""
    short, long = sorted((a.split(), b.split()), key=len)
    if not short:
        return 0.0
    if short == long:
        return 100.0
    # Greedy pairing, best pairs first: names have a handful of words, and the best pair of a
    # name's words is nearly always right.
    scored = sorted(
        ((_pair(s, t), i, j) for i, s in enumerate(short) for j, t in enumerate(long)),
        reverse=True,
    )
    used_short: set[int] = set()
    used_long: set[int] = set()
    total = 0.0
    for score, i, j in scored:
        if i in used_short or j in used_long:
            continue
        used_short.add(i)
        used_long.add(j)
        total += score
        if len(used_short) == len(short):
            break
    leftover = len(long) - len(short)
    factor = LEFTOVER if len(short) > 1 else LEFTOVER_OF_ONE_WORD
    return round(total / len(short) * factor**leftover, 1)


def indexed_words(key: str) -> list[str]:
    """The words of a key that the candidate index holds: all but initials."""
    return sorted({word for word in key.split() if len(word) > 1})


SHORT_WORD = 3  # words this short are looked up as they are


def near_spellings(word: str) -> set[str]:
    """The word and every spelling one edit away (a letter changed, added, dropped, or two
    swapped): a key word within one edit of this one is among them. Around 400 for a name.

    Not for short words: one edit is a third of "Ana", which matches half the short names of
    the world ("Ada", "Ina", "Eva"...), and takes that pair's score below any rule's threshold.
    """
    if len(word) <= SHORT_WORD:
        return {word}
    out = {word}
    for i in range(len(word) + 1):
        head, tail = word[:i], word[i:]
        out.update(head + c + tail for c in KEY_LETTERS)
        if tail:
            out.add(head + tail[1:])
            out.update(head + c + tail[1:] for c in KEY_LETTERS)
            if len(tail) > 1:
                out.add(head + tail[1] + tail[0] + tail[2:])
    return {w for w in out if len(w) > 1}
