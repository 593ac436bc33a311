"""Telegram updates into committed events, whichever way they came (webhook or long polling):
normalize → dedup key `telegram:<channel>:<update_id>` → the inbound group commit, which writes
the key and the event in one transaction. A repeated update finds its key and is dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiogram.types import Update

from libs.common.events import InboundEdited, InboundMessage
from services.ingest import service
from services.ingest.models import Channel
from services.ingest.telegram import normalize, normalize_edit


def dedup_key(channel: Channel, update: Update) -> str:
    """One key per update: Telegram's update_id is unique per bot, and a channel is one bot."""
    return f"telegram:{channel.id}:{update.update_id}"


def events(channel: Channel, update: Update) -> InboundMessage | InboundEdited | None:
    """The event an update means for chatdesk, or None (logged by the normalizers)."""
    if update.edited_message is not None:
        return normalize_edit(update, channel)
    return normalize(update, channel)


class TelegramInbound:
    def __init__(self, inbound: service.InboundCommits) -> None:
        self.inbound = inbound

    async def accept(self, channel: Channel, updates: Sequence[Update]) -> None:
        """Returns once every update is durably accepted (or was a repeat)."""
        # Built in order, so `received_at` follows the order Telegram gave them.
        accepted = [
            (dedup_key(channel, update), event)
            for update in updates
            if (event := events(channel, update)) is not None
        ]
        await asyncio.gather(*(self.inbound.submit(item) for item in accepted))
