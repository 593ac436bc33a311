"""What ingest takes from any Meta webhook: customer messages, and receipts for our messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from libs.common.events import Attachment


@dataclass(frozen=True)
class CustomerMessage:
    """A message (or a tapped button) from a customer to one of our accounts."""

    account_id: str  # the page (or Instagram account) it was sent to
    user_id: str  # the customer's id as that account sees them (PSID)
    message_id: str  # the platform's id of the message, unique per account
    sent_at: datetime
    text: str | None
    attachments: list[Attachment] = field(default_factory=list)


@dataclass(frozen=True)
class Receipt:
    """The customer's app received (or showed) our messages sent up to `watermark`."""

    account_id: str
    user_id: str
    status: Literal["delivered", "read"]
    watermark: datetime
    message_ids: tuple[str, ...] = ()  # named outright, when the platform does


Item = CustomerMessage | Receipt
