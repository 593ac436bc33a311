"""Name normalization and scoring (services/contacts/names.py): what the duplicate rules see."""

from __future__ import annotations

import pytest

from services.contacts.names import indexed_words, name_key, name_score, near_spellings


def score(a: str, b: str) -> float:
    return name_score(name_key(a), name_key(b))


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Ivan Petrov", "ivan petrov"),
        ("Иван Петров", "ivan petrov"),
        ("PETROV, Ivan", "ivan petrov"),
        ("  petrov   ivan ", "ivan petrov"),
        ("I. Petrov", "i petrov"),
        ("María García", "garcia maria"),
        ("Jean-Pierre Lefèvre", "iean lefevre piere"),
        ("O'Brien Seán", "obrien sean"),
        ("Straße", "strase"),
        ("Юлия Кузнецова", "iulia kuznetsova"),
        ("Yuliya Kuznetsova", "iulia kuznetsova"),
        ("Aleksandr", "aleksandr"),
        ("Alexandr", "aleksandr"),
        ("Łukasz Wójcik", "lukasz voicik"),
        ("", ""),
        ("🙂 ...", ""),
    ],
)
def test_keys_ignore_case_accents_script_punctuation_and_word_order(name: str, key: str) -> None:
    assert name_key(name) == key


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Ivan Petrov", "Иван Петров"),
        ("Ivan Petrov", "Petrov Ivan"),
        ("Ivan Petrov", "I. Petrov"),
        ("Maria Garcia", "María García"),
        ("Ivan Petrov", "Иван Иванович Петров"),  # a patronymic
        ("Maria Garcia", "Maria Garcia Lopez"),  # a second surname
        ("Ivan Petrov", "Ivan Petrob"),  # a typo
        ("Ivan Petrov", "Ivan Betrov"),  # a typo in the first letter
        ("Alexander Ivanov", "Aleksandr Ivanov"),
        ("Юлия Кузнецова", "Julija Kuznecova"),
        ("Sergey Smirnov", "Сергей Смирнов"),
    ],
)
def test_the_same_person_written_differently_scores_above_the_default_threshold(
    a: str, b: str
) -> None:
    assert score(a, b) >= 88, (a, b, score(a, b))
    assert score(a, b) == score(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Ivan Petrov", "Pavel Petrov"),
        ("Ivan Petrov", "Ivan Ivanov"),
        ("Ivan Petrov", "Petr Ivanov"),
        ("Ivan Petrov", "Ivana Petrova"),
        ("Klavdia Krasilnikova", "Klavdia Sitnikova"),
        ("Tamara Karpova", "Тамара Комиссарова"),
        ("Ivan Petrov", "Anna Petrova"),
        ("Maria Garcia", "Mario Rossi"),
        ("Maria Garcia", "José García"),
        ("John Smith", "Jane Smith"),
        ("Ivan", "Ivan Petrov"),  # a first name alone says little
        ("Ivan Petrov", "Sergey Smirnov"),
    ],
)
def test_clearly_different_people_score_below_it(a: str, b: str) -> None:
    assert score(a, b) < 88, (a, b, score(a, b))


def test_scores() -> None:
    assert score("Ivan Petrov", "Ivan Petrov") == 100
    assert score("I. Petrov", "Ivan Petrov") == 90  # an initial is likely, never certain
    assert score("", "Ivan Petrov") == 0
    assert score("Ivan Petrov", "Ivana Petrova") == 82.9  # each word one letter longer
    assert score("Klavdia Krasilnikova", "Klavdia Sitnikova") == 83.3  # surnames merely end alike


def test_the_index_holds_full_words_and_finds_them_one_edit_away() -> None:
    assert indexed_words(name_key("I. Petrov Petrov")) == ["petrov"]
    near = near_spellings("petrov")
    for spelling in ("petrov", "petrob", "petrv", "petrovv", "eptrov", "ptrov"):
        assert spelling in near
    assert "pterov" in near  # two letters swapped
    assert "ptreov" not in near  # two edits
    assert all(len(s) > 1 for s in near_spellings("li"))
