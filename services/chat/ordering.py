"""The order a chat's messages are shown in: the platform's, whatever order they arrived in.

Customers' messages can arrive out of order: a platform retries a webhook, a replica is slower,
an album's items come as separate updates. Among themselves they are ordered as the platform
numbers them: its send time (`sent_at`, Telegram's is to the second), then its message number
(`sequence`, Telegram's message_id). Agents' replies have no platform time of their own that
would compare; they stay where they were posted.

So each customer message is placed at the earliest arrival among itself and the customer
messages the platform puts after it: one that arrived late moves up to just before the first
later message that overtook it, and one that arrived in order keeps its arrival time. Sorting by
that position (ties by the platform's order) merges both kinds of message into one timeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, TypeVar


class Ordered(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def direction(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def sent_at(self) -> datetime | None: ...
    @property
    def sequence(self) -> int | None: ...


M = TypeVar("M", bound=Ordered)


def _platform_order(message: Ordered) -> tuple[datetime, int, datetime, str]:
    return (
        message.sent_at or message.created_at,
        message.sequence or 0,
        message.created_at,
        message.id,
    )


def conversation_order(messages: Sequence[M]) -> list[M]:
    position: dict[str, datetime] = {}
    earliest: datetime | None = None
    customers = (m for m in messages if m.direction == "in")
    for message in sorted(customers, key=_platform_order, reverse=True):
        if earliest is None or message.created_at < earliest:
            earliest = message.created_at
        position[message.id] = earliest
    return sorted(messages, key=lambda m: (position.get(m.id, m.created_at), *_platform_order(m)))
