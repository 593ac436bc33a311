"""ingest's bus handlers: delivering agents' replies to the platforms, and asking for new
contacts' pictures."""

from __future__ import annotations

from libs.common.db import Database
from libs.common.driver import DriverTx
from libs.common.envelope import Envelope
from libs.common.events import ChatReplyPosted, ContactCreated
from libs.common.handlers import Consumers
from services.ingest import fetching, service


def build_consumers(senders: service.Senders, fetcher: fetching.Fetcher) -> Consumers:
    consumers = Consumers("ingest")

    @consumers.on_raw(ChatReplyPosted)
    async def deliver_reply(db: Database, event: ChatReplyPosted, _: Envelope) -> None:
        # Not one transaction: the platform call must not run while holding a database lock.
        await service.deliver_reply(db, senders, event)

    @consumers.on_driver_batch(ContactCreated)
    async def fetch_picture(tx: DriverTx, batch: list[tuple[ContactCreated, Envelope]]) -> None:
        # Only the downloads' jobs here: the fetcher downloads after the commit.
        await fetching.add_picture_jobs(tx, [event for event, _ in batch])
        tx.after_commit(fetcher.wake)

    return consumers
