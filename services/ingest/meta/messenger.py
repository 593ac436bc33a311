"""Messenger's webhook events (`object: "page"`) and the `InboundMessage` they become.

An entry is one page's batch: `{"id": PAGE_ID, "time": ms, "messaging": [event, ...]}`. An event
has `sender.id` (the customer's PSID), `recipient.id` (the page), `timestamp` (ms) and one of
`message`, `postback`, `delivery`, `read`; other kinds (reactions, referrals, optins, handover
`standby` arrays) are not customer messages and are skipped. Meta adds fields over time, so
unknown ones are ignored rather than refused.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter

from libs.common.events import Attachment, InboundMessage, Sender
from services.ingest.meta.items import CustomerMessage, Item, Receipt
from services.ingest.models import Channel

log = logging.getLogger(__name__)

UNSUPPORTED = "[unsupported message]"
# Messenger's attachment types, in the words the rest of chatdesk uses (as for Telegram).
MEDIA_KINDS = {"image": "photo", "video": "video", "audio": "audio", "file": "document"}
# chat keeps platform message ids in 100 characters; longer mids are stored by their digest.
MAX_ID = 100


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class Party(_Model):
    id: str | None = None  # a PSID or page id; chat-plugin guests have `user_ref` instead


class Coordinates(_Model):
    lat: float
    long: float


class AttachmentPayload(_Model):
    url: str | None = None
    title: str | None = None
    sticker_id: str | None = None
    coordinates: Coordinates | None = None


class MessageAttachment(_Model):
    type: str
    payload: AttachmentPayload | None = None
    # Before webhook v6, a shared link (`fallback`) carried these beside a null payload.
    title: str | None = None
    url: str | None = None


class QuickReply(_Model):
    payload: str


class MessageBody(_Model):
    mid: str
    text: str | None = None
    attachments: list[MessageAttachment] = []
    quick_reply: QuickReply | None = None
    is_echo: bool = False


class Postback(_Model):
    mid: str | None = None  # absent in older webhook versions
    title: str | None = None
    payload: str | None = None


class DeliveryReceipt(_Model):
    watermark: int
    mids: list[str] = []


class ReadReceipt(_Model):
    watermark: int


class Messaging(_Model):
    sender: Party
    recipient: Party
    timestamp: int | None = None  # delivery receipts come without one
    message: MessageBody | None = None
    postback: Postback | None = None
    delivery: DeliveryReceipt | None = None
    read: ReadReceipt | None = None


class Entry(_Model):
    id: str
    time: int
    messaging: list[Messaging] = []


ENTRIES = TypeAdapter(list[Entry])


def parse_entries(entries: list[dict[str, Any]]) -> list[Item]:
    """Customer messages and receipts in a `page` webhook, in order; raises ValidationError."""
    items: list[Item] = []
    for entry in ENTRIES.validate_python(entries):
        for event in entry.messaging:
            item = _item(entry, event)
            if item is not None:
                items.append(item)
    return items


def _item(entry: Entry, event: Messaging) -> Item | None:
    psid = event.sender.id
    if event.message is not None and event.message.is_echo:
        return None  # what our page (or its inbox) sent, reported back
    if psid is None:
        log.info("messenger event without a PSID ignored (chat plugin guest)")
        return None
    if event.delivery is not None:
        return Receipt(
            entry.id, psid, "delivered", _time(event.delivery.watermark), tuple(event.delivery.mids)
        )
    if event.read is not None:
        return Receipt(entry.id, psid, "read", _time(event.read.watermark))
    sent_at = _time(event.timestamp or entry.time)
    if event.message is not None:
        text, attachments = _content(event.message)
        return CustomerMessage(entry.id, psid, event.message.mid, sent_at, text, attachments)
    if event.postback is not None:
        # A tapped button: what the customer saw on it is what the agent should read.
        postback = event.postback
        mid = postback.mid or f"postback:{psid}:{event.timestamp or entry.time}"
        return CustomerMessage(
            entry.id, psid, mid, sent_at, postback.title or postback.payload or UNSUPPORTED
        )
    log.info("messenger event of another kind ignored")
    return None


def _content(message: MessageBody) -> tuple[str | None, list[Attachment]]:
    lines = [message.text] if message.text else []
    if not lines and message.quick_reply is not None:
        lines.append(message.quick_reply.payload)
    # Newer webhooks send a sticker twice, as a `sticker` and as an `image`; older ones send
    # only the image, with a sticker_id.
    has_sticker = any(a.type == "sticker" for a in message.attachments)
    attachments: list[Attachment] = []
    for attachment in message.attachments:
        payload = attachment.payload or AttachmentPayload()
        kind = attachment.type
        if kind == "image" and has_sticker:
            continue
        if kind == "image" and payload.sticker_id:
            kind = "sticker"
        if kind in MEDIA_KINDS or kind == "sticker":
            attachments.append(
                Attachment(kind=MEDIA_KINDS.get(kind, kind), platform_file_id=payload.url)
            )
        elif kind == "location" and payload.coordinates is not None:
            lines.append(f"[location] {payload.coordinates.lat}, {payload.coordinates.long}")
        else:
            # A shared link (`fallback`), a post, a reel...: what it is and where it points.
            title = payload.title or attachment.title
            url = payload.url or attachment.url
            shown = " ".join(p for p in (title, url) if p)
            lines.append(shown or UNSUPPORTED)
    if not lines and not attachments:
        lines.append(UNSUPPORTED)
    return ("\n".join(lines) or None), attachments


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def platform_id(mid: str) -> str:
    """A platform message id that fits chatdesk's columns (long ids by their SHA-256)."""
    if len(mid) <= MAX_ID:
        return mid
    return "sha256:" + hashlib.sha256(mid.encode()).hexdigest()


def dedup_key(message: CustomerMessage) -> str:
    """One key per platform message: Meta redelivers until it gets a 200."""
    return f"facebook:{message.account_id}:{platform_id(message.message_id)}"


def inbound_message(message: CustomerMessage, channel: Channel, sender: Sender) -> InboundMessage:
    return InboundMessage(
        channel_id=channel.id,
        queue_id=channel.queue_id,
        platform="facebook",
        external_user_id=message.user_id,
        external_chat_id=message.user_id,  # replies go to the PSID
        external_message_id=platform_id(message.message_id),
        sender=sender,
        text=message.text,
        attachments=message.attachments,
        sent_at=message.sent_at,
    )
