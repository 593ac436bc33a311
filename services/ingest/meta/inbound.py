"""A verified Meta webhook's items into committed events: customer messages through the inbound
group commit (dedup + outbox, as Telegram's), receipts through the receipt commit.

Meta posts every page of an app to the one webhook URL the app has, so an entry may be for
another page than the channel in the URL: it goes to that page's channel when the same app
(the same secret, which just verified the body) serves it, and is dropped otherwise.
"""

from __future__ import annotations

import asyncio
import hmac
import logging

from libs.common.events import InboundMessage, Sender
from services.ingest import channels, service
from services.ingest.meta import messenger
from services.ingest.meta.items import CustomerMessage, Item, Receipt
from services.ingest.meta.profiles import Profiles
from services.ingest.models import Channel

log = logging.getLogger(__name__)


class MetaInbound:
    def __init__(
        self,
        cache: channels.ChannelCache,
        profiles: Profiles,
        inbound: service.InboundCommits,
        receipts: service.ReceiptCommits,
    ) -> None:
        self.cache = cache
        self.profiles = profiles
        self.inbound = inbound
        self.receipts = receipts

    async def accept(self, channel: Channel, items: list[Item]) -> None:
        """Returns once every item is durably accepted (or was a repeat)."""
        routed = [(await self._channel_for(channel, item.account_id), item) for item in items]
        messages = [(c, i) for c, i in routed if c is not None and isinstance(i, CustomerMessage)]
        receipts = [(c, i) for c, i in routed if c is not None and isinstance(i, Receipt)]
        senders = await self._senders(messages)
        # Built in webhook order, so `received_at` keeps a customer's messages in order.
        events: list[tuple[str, InboundMessage]] = [
            (
                messenger.dedup_key(item),
                messenger.inbound_message(item, c, senders[(c.id, item.user_id)]),
            )
            for c, item in messages
        ]
        await asyncio.gather(
            *(self.inbound.submit(event) for event in events),
            *(self.receipts.submit((c.id, receipt)) for c, receipt in receipts),
        )

    async def _senders(
        self, messages: list[tuple[Channel, CustomerMessage]]
    ) -> dict[tuple[str, str], Sender]:
        customers = {(c.id, m.user_id): c for c, m in messages}
        names = await asyncio.gather(
            *(self.profiles.sender(c, psid) for (_, psid), c in customers.items())
        )
        return dict(zip(customers, names, strict=True))

    async def _channel_for(self, channel: Channel, page_id: str) -> Channel | None:
        if page_id == channel.external_id:
            return channel
        other = await self.cache.facebook_page(page_id)
        if (
            other is None
            or not other.active
            or not hmac.compare_digest(other.secret.encode(), channel.secret.encode())
        ):
            log.warning(
                "messenger entry for a page no channel of this app serves: dropped",
                extra={"page_id": page_id, "channel_id": channel.id},
            )
            return None
        return other
