"""Messenger takes at most 2000 characters a message, Telegram 4096: longer replies go out in
parts."""

from __future__ import annotations

from services.ingest import sending
from services.ingest.meta.replies import TEXT_LIMIT
from services.ingest.telegram import TEXT_LIMIT as TELEGRAM_LIMIT


def split_text(text: str) -> list[str]:
    return sending.split_text(text, TEXT_LIMIT)


def test_short_text_is_one_part() -> None:
    assert split_text("Hello") == ["Hello"]
    assert split_text("x" * TEXT_LIMIT) == ["x" * TEXT_LIMIT]


def test_long_text_is_cut_between_words() -> None:
    words = " ".join(f"word{i:04d}" for i in range(500))  # 4499 characters

    parts = split_text(words)

    assert len(parts) == 3
    assert all(0 < len(p) <= TEXT_LIMIT for p in parts)
    assert " ".join(parts) == words
    assert all(not p.startswith(" ") and not p.endswith(" ") for p in parts)


def test_line_breaks_are_preferred_when_later() -> None:
    text = "a" * 1500 + "\n" + "b" * 1000

    assert split_text(text) == ["a" * 1500, "b" * 1000]


def test_text_without_breaks_is_cut_at_the_limit() -> None:
    text = "x" * (TEXT_LIMIT * 2 + 10)

    assert split_text(text) == ["x" * TEXT_LIMIT, "x" * TEXT_LIMIT, "x" * 10]


def test_non_ascii_counts_characters() -> None:
    text = "щ" * 2500

    assert [len(p) for p in split_text(text)] == [2000, 500]


def test_telegram_parts_are_4096_characters_at_most() -> None:
    text = ("word " * 2000).strip()  # 9999 characters

    parts = sending.split_text(text, TELEGRAM_LIMIT)

    assert len(parts) == 3
    assert all(0 < len(p) <= TELEGRAM_LIMIT for p in parts)
    assert " ".join(parts) == text
