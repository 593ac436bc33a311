# ruff: noqa: RUF001 (Cyrillic and accented letters are the point of this module)
"""Realistic customer names for benchmarks: Faker's name lists of several locales, with the
variations real contacts have (patronymics, a surname first, initials, one word only, Cyrillic
names written in Latin, typos). Fast: names are drawn from the lists, not through Faker's
formatters, so a million take seconds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import import_module
from typing import Any

# (locale, weight): a customer base of a company selling in Europe and the Americas.
LOCALES = (
    ("ru_RU", 3),
    ("uk_UA", 1),
    ("en_US", 3),
    ("es_ES", 2),
    ("de_DE", 1),
    ("fr_FR", 1),
    ("it_IT", 1),
    ("pl_PL", 1),
    ("tr_TR", 1),
)
TYPO_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Pool:
    """Names of one locale with their frequencies, where Faker has them."""

    words: tuple[str, ...]
    weights: tuple[float, ...] | None

    def draw(self, rng: random.Random) -> str:
        if self.weights is None:
            return rng.choice(self.words)
        return rng.choices(self.words, self.weights)[0]


def _pool(provider: Any, *names: str) -> Pool:
    """The first of `names` the provider has (plus unisex surnames, where the locale has them),
    skipping placeholders such as pl_PL's `last_names = ("Doe",)`."""
    for name in names:
        value = getattr(provider, name, None)
        if value and len(value) > 5:
            unisex = getattr(provider, "unisex_last_names", ()) if "last" in name else ()
            if isinstance(value, dict):
                words = (*value, *unisex)
                weights = (*map(float, value.values()), *([1.0] * len(unisex)))
                return Pool(tuple(words), tuple(weights))
            return Pool(tuple(dict.fromkeys((*value, *unisex))), None)
    raise ValueError(f"{provider.__module__}: none of {names}")


@dataclass(frozen=True)
class Locale:
    weight: int
    male: Pool
    female: Pool
    last_male: Pool
    last_female: Pool
    middle_male: Pool | None
    cyrillic: bool

    @classmethod
    def load(cls, code: str, weight: int) -> Locale:
        provider = import_module(f"faker.providers.person.{code}").Provider
        middle = getattr(provider, "middle_names_male", None)
        return cls(
            weight=weight,
            male=_pool(provider, "first_names_male", "first_names"),
            female=_pool(provider, "first_names_female", "first_names"),
            last_male=_pool(provider, "last_names_male", "male_last_names", "last_names"),
            last_female=_pool(
                provider, "last_names_female", "female_last_names", "last_names", "male_last_names"
            ),
            middle_male=_pool(provider, "middle_names_male") if middle else None,
            cyrillic=code in ("ru_RU", "uk_UA"),
        )


class People:
    """Draws names: `People(seed).name()`."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.locales = [Locale.load(code, weight) for code, weight in LOCALES]
        self.weights = [locale.weight for locale in self.locales]

    def name(self) -> str:
        rng = self.rng
        locale = rng.choices(self.locales, self.weights)[0]
        male = rng.random() < 0.5
        first = (locale.male if male else locale.female).draw(rng)
        last = (locale.last_male if male else locale.last_female).draw(rng)
        if locale.cyrillic and rng.random() < 0.4:  # written in Latin, as on many profiles
            first, last = _latin(first), _latin(last)
        shape = rng.random()
        if shape < 0.08 and locale.middle_male is not None and male:
            name = f"{first} {locale.middle_male.draw(rng)} {last}"
        elif shape < 0.14:
            name = f"{last} {first}"
        elif shape < 0.18:
            name = f"{first[0]}. {last}"
        elif shape < 0.23:
            name = first
        else:
            name = f"{first} {last}"
        return self.typo(name) if rng.random() < 0.05 else name

    def typo(self, name: str) -> str:
        """One slip of the keyboard: a letter changed, dropped, doubled or swapped."""
        rng = self.rng
        if len(name) < 4:
            return name
        i = rng.randrange(1, len(name) - 1)
        kind = rng.randrange(4)
        if kind == 0:
            return name[:i] + rng.choice(TYPO_LETTERS) + name[i + 1 :]
        if kind == 1:
            return name[:i] + name[i + 1 :]
        if kind == 2:
            return name[:i] + name[i] + name[i:]
        return name[: i - 1] + name[i] + name[i - 1] + name[i + 1 :]

    def variant(self, name: str) -> str:
        """Another way the same person may be written: a typo, the words swapped, or an
        initial for the first name."""
        words = name.split()
        kind = self.rng.randrange(3)
        if kind == 0 or len(words) < 2:
            return self.typo(name)
        if kind == 1:
            return " ".join(reversed(words))
        return f"{words[0][0]}. {' '.join(words[1:])}"


_ROMAN = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "yo", "ж": "zh", "з": "z",
    "и": "i", "й": "i", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r",
    "с": "s", "т": "t", "у": "u", "ф": "f", "х": "h", "ц": "ts", "ч": "ch", "ш": "sh",
    "щ": "sch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "iu", "я": "ia", "і": "i", "ї": "i",
    "є": "ie", "ґ": "g",
}  # fmt: skip


def _latin(word: str) -> str:
    """A Cyrillic name as its owner might type it in Latin (not chatdesk's own spelling)."""
    out = "".join(_ROMAN.get(c.lower(), c.lower()) for c in word)
    return out[:1].upper() + out[1:]
