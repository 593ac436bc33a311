"""`conversation_order`: a chat's messages in the platform's order, whatever order they arrived
in, with the agent's replies where they were posted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.chat.ordering import conversation_order

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class M:
    id: str
    direction: str
    created_at: datetime  # arrival (customer) or posting (agent)
    sent_at: datetime | None = None
    sequence: int | None = None


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def customer(id: str, arrived: float, sent: float, number: int | None = None) -> M:
    return M(id, "in", s(arrived), s(sent), number)


def agent(id: str, posted: float) -> M:
    return M(id, "out", s(posted))


def ids(messages: list[M]) -> list[str]:
    return [m.id for m in conversation_order(messages)]


def test_messages_that_arrived_in_order_keep_it() -> None:
    messages = [
        customer("hello", 0.2, 0, 1),
        agent("reply", 3),
        customer("thanks", 5.1, 5, 2),
    ]

    assert ids(messages[::-1]) == ["hello", "reply", "thanks"]


def test_a_message_that_arrived_late_goes_before_the_one_that_overtook_it() -> None:
    messages = [
        customer("second", 1.0, 0.9, 11),  # arrived first
        customer("first", 2.0, 0.5, 10),  # sent earlier, arrived later
    ]

    assert ids(messages) == ["first", "second"]


def test_same_second_messages_follow_telegrams_numbering() -> None:
    # Telegram's dates are to the second: an album's items share one.
    album = [customer(f"item{n}", 1 + (3 - n) / 10, 1, 40 + n) for n in (1, 2, 3)]

    assert ids(album) == ["item1", "item2", "item3"]


def test_a_late_message_stays_before_a_reply_to_what_overtook_it() -> None:
    messages = [
        customer("b", 1.0, 0.8, 21),
        agent("reply", 2.0),
        customer("a", 3.0, 0.5, 20),  # sent before b, arrived after the reply
    ]

    assert ids(messages) == ["a", "b", "reply"]


def test_a_reply_posted_while_an_album_arrived_stays_where_it_was_posted() -> None:
    # What came before the reply stays before it, in album order; what came after, after.
    messages = [
        customer("item2", 1.0, 1, 51),
        agent("reply", 1.5),
        customer("item1", 2.0, 1, 50),
        customer("item3", 2.1, 1, 52),
    ]

    assert ids(messages) == ["item1", "item2", "reply", "item3"]


def test_messages_without_platform_numbers_order_by_platform_time() -> None:
    # Messenger's mids are not ordered: its millisecond timestamps are.
    messages = [customer("later", 1.0, 0.7), customer("earlier", 1.2, 0.6)]

    assert ids(messages) == ["earlier", "later"]
