"""ingest's bus handlers: delivering agents' replies to the platforms."""

from __future__ import annotations

from libs.common.db import Database
from libs.common.envelope import Envelope
from libs.common.events import ChatReplyPosted
from libs.common.handlers import Consumers
from services.ingest import service


def build_consumers(senders: service.Senders) -> Consumers:
    consumers = Consumers("ingest")

    @consumers.on_raw(ChatReplyPosted)
    async def deliver_reply(db: Database, event: ChatReplyPosted, _: Envelope) -> None:
        # Not one transaction: the platform call must not run while holding a database lock.
        await service.deliver_reply(db, senders, event)

    return consumers
