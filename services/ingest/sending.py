"""Sending an agent's reply to a platform: the interface every platform's sender implements.

`service.deliver_reply` picks the sender for the channel's kind, lets it try (and retry), then
records the `Outcome` as the message's delivery status. A sender never touches the deliveries
table: what it reports is all the recording needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from libs.common.events import ChatReplyPosted, DeliveryStatus
from services.ingest.models import Channel

# What a send teaches about the channel's token; a channel's status has `webhook_failing` too,
# which only the Telegram link sets and clears (`channels.ChannelStatus`).
ChannelHealth = Literal["ok", "token_invalid"]


@dataclass(frozen=True)
class RetryPolicy:
    """How long a reply keeps trying before the agent is told it failed."""

    attempts: int
    backoff_s: float
    max_wait_s: float = 60.0

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        return min(retry_after or self.backoff_s * 2 ** (attempt - 1), self.max_wait_s)


@dataclass(frozen=True)
class Outcome:
    status: DeliveryStatus
    platform_message_id: str | None = None
    error: str | None = None
    # When the platform was asked (the last part's request): receipts whose watermark reaches
    # this time cover the message, so it is taken before the request, never after.
    sent_at: datetime | None = None
    # What the attempt taught us about the channel's credentials, if anything.
    channel_health: ChannelHealth | None = None
    # The customer cannot receive messages from this channel (blocked it, deleted the account):
    # contacts is told, so the contact shows it.
    recipient_unreachable: bool = False


def split_text(text: str, limit: int) -> list[str]:
    """`text` in parts of at most `limit` characters, cut at a line break, else a word break,
    in the second half of a part; parts are sent in order, each as its own message."""
    parts: list[str] = []
    while len(text) > limit:
        window = text[: limit + 1]  # a break just past the limit still leaves a full part
        cut = window.rfind("\n")
        if cut < limit // 2:  # paragraphs too long: between words
            cut = window.rfind(" ")
        if cut < limit // 2:  # no break in the second half: cut inside the word
            parts.append(text[:limit])
            text = text[limit:]
        else:
            parts.append(text[:cut])
            text = text[cut + 1 :]  # the break itself is not sent
    parts.append(text)
    return parts


def partly_sent(error: str, sent: int, parts: int) -> str:
    """A failure's reason, saying which parts of a long reply went out before it."""
    if sent == 0:
        return error
    return f"{error} (The first {sent} of its {parts} parts were sent.)"


class SendFailed(Exception):
    """A part of a reply the platform will not take: the reason agents see."""

    def __init__(
        self, error: str, health: ChannelHealth | None = None, *, unreachable: bool = False
    ) -> None:
        super().__init__(error)
        self.error = error
        self.health = health
        self.unreachable = unreachable  # the customer cannot receive messages on this channel


class ReplySender(Protocol):
    """One platform's way of sending a reply (its text, its files), retries included."""

    async def send(self, channel: Channel, reply: ChatReplyPosted) -> Outcome: ...
