"""Agents' replies through the Send API: the `ReplySender` of `facebook` channels.

What Meta's answers mean for a reply:
- outage (no answer, 5xx, codes 1/2/1200) or rate limit (4, 17, 32, 613): try again with backoff;
- 10/2018278, outside the 24-hour window: once more tagged HUMAN_AGENT if the channel may use the
  tag and the customer wrote within 7 days; otherwise failed, saying why;
- 551 or subcode 1545041: the customer can't receive messages (blocked the page, left Messenger);
- 190: the page token is dead: failed, and the channel is flagged `token_invalid`;
- anything else: failed with Meta's message.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from libs.common.db import Database
from libs.common.envelope import utcnow
from libs.common.events import ChatReplyPosted
from services.ingest import sending
from services.ingest.meta.graph import Credentials, Graph, GraphError, GraphUnreachable
from services.ingest.models import Channel, Thread
from services.ingest.sending import ChannelHealth, Outcome, RetryPolicy, partly_sent

TEXT_LIMIT = 2000  # characters per Messenger text message
HUMAN_AGENT_WINDOW = timedelta(days=7)

WINDOW_CLOSED = (
    "The customer last wrote more than 24 hours ago, and Facebook takes replies only within 24 "
    "hours of the customer's last message (this channel does not use the HUMAN_AGENT tag)."
)
AGENT_WINDOW_CLOSED = (
    "The customer last wrote more than 7 days ago: Facebook takes no replies, even from a human "
    "agent, until they write again."
)
UNAVAILABLE = (
    "The customer can't receive messages from this page right now (they may have blocked it or "
    "left Messenger)."
)
TOKEN_INVALID = (
    "The page access token is no longer valid (expired or revoked): the channel needs a new one."
)


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """`text` in parts Messenger accepts, cut at a line or word break where one is near."""
    return sending.split_text(text, limit)


class _Failed(Exception):
    def __init__(
        self, error: str, health: ChannelHealth | None = None, *, unreachable: bool = False
    ) -> None:
        super().__init__(error)
        self.error = error
        self.health = health
        self.unreachable = unreachable


class FacebookSender:
    def __init__(self, graph: Graph, db: Database, policy: RetryPolicy) -> None:
        self.graph = graph
        self.db = db
        self.policy = policy

    async def send(self, channel: Channel, reply: ChatReplyPosted) -> Outcome:
        parts = split_text(reply.message.text or "")
        tagged = False  # once a part needed the tag, the rest need it too
        message_id, started = "", utcnow()
        for number, part in enumerate(parts, 1):
            try:
                message_id, started, tagged = await self._send_part(
                    channel, reply.external_chat_id, part, tagged
                )
            except _Failed as failed:
                return Outcome(
                    "failed",
                    error=partly_sent(failed.error, number - 1, len(parts)),
                    channel_health=failed.health,
                    recipient_unreachable=failed.unreachable,
                )
        return Outcome("sent", message_id, sent_at=started, channel_health="ok")

    async def _send_part(
        self, channel: Channel, psid: str, text: str, tagged: bool
    ) -> tuple[str, datetime, bool]:
        """The part's message id, when it was asked for, and whether it went tagged."""
        policy, attempt = self.policy, 1
        while True:
            started = utcnow()
            try:
                sent = await self.graph.send_text(
                    Credentials.of(channel), psid, text, tag="HUMAN_AGENT" if tagged else None
                )
                return sent.message_id, started, tagged
            except GraphUnreachable:
                reason = "Facebook could not be reached"
            except GraphError as exc:
                if exc.outside_window and not tagged:
                    await self._require_human_agent_window(channel, psid)
                    tagged = True
                    continue  # at once: this is another message, not a retry of a failed call
                if exc.outside_window:
                    raise _Failed(
                        f"Facebook refused the reply even tagged HUMAN_AGENT: {exc.message}"
                    ) from None
                if exc.recipient_unavailable:
                    raise _Failed(UNAVAILABLE, unreachable=True) from None
                if exc.token_invalid:
                    raise _Failed(TOKEN_INVALID, "token_invalid") from None
                if exc.rate_limited:
                    reason = "Facebook kept rate-limiting the page"
                elif exc.temporary:
                    reason = "Facebook could not be reached"
                else:
                    raise _Failed(f"Facebook refused the message: {exc.message}") from None
            if attempt >= policy.attempts:
                raise _Failed(f"{reason}; gave up after {policy.attempts} attempts.")
            await asyncio.sleep(policy.wait(attempt))
            attempt += 1

    async def _require_human_agent_window(self, channel: Channel, psid: str) -> None:
        """Fail unless a reply refused for the 24-hour window may go again as HUMAN_AGENT."""
        if not channel.human_agent_tag:
            raise _Failed(WINDOW_CLOSED)
        async with self.db.sessions() as session:
            thread = await session.get(Thread, (channel.id, psid))
        last = thread.last_inbound_at if thread is not None else None
        if last is None or utcnow() - last > HUMAN_AGENT_WINDOW:
            raise _Failed(AGENT_WINDOW_CLOSED)
