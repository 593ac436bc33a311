"""Agents' replies through the Send API: the `ReplySender` of `facebook` channels.

What Meta's answers mean for a reply:
- outage (no answer, 5xx, codes 1/2/1200) or rate limit (4, 17, 32, 613): try again with backoff;
- 10/2018278, outside the 24-hour window: once more tagged HUMAN_AGENT if the channel may use the
  tag and the customer wrote within 7 days; otherwise failed, saying why;
- 551 or subcode 1545041: the customer can't receive messages (blocked the page, left Messenger);
- 190: the page token is dead: failed, and the channel is flagged `token_invalid`;
- anything else: failed with Meta's message.

A file goes first, uploaded with the message (multipart `filedata`); the text follows as its
own message, in parts of at most 2000 characters: Messenger has no captions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial

from libs.common.blobs import BlobStore
from libs.common.db import Database
from libs.common.envelope import utcnow
from libs.common.events import Attachment, ChatReplyPosted
from services.ingest.meta.graph import Credentials, Graph, GraphError, GraphUnreachable, Sent
from services.ingest.models import Channel, Thread
from services.ingest.sending import Outcome, RetryPolicy, SendFailed, partly_sent, split_text

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
FILE_LIMIT = 25 * 1024 * 1024  # bytes of an attachment Messenger takes
FILE_TOO_LARGE = "The file is too large for Facebook (attachments may be 25 MB at most)."

# A part of a reply: the Send API call, given the tag it must go with (or None).
Part = Callable[[str | None], Awaitable[Sent]]


def attachment_type(mime_type: str | None) -> str:
    """Messenger's attachment type for a file: image, video, audio, or file."""
    major = (mime_type or "").split("/")[0]
    return major if major in ("image", "video", "audio") else "file"


class FacebookSender:
    def __init__(self, graph: Graph, db: Database, policy: RetryPolicy, blobs: BlobStore) -> None:
        self.graph = graph
        self.db = db
        self.policy = policy
        self.blobs = blobs

    async def send(self, channel: Channel, reply: ChatReplyPosted) -> Outcome:
        psid, credentials = reply.external_chat_id, Credentials.of(channel)
        try:
            parts = [
                await self._file_part(credentials, psid, file) for file in reply.message.attachments
            ]
        except SendFailed as failed:
            return Outcome("failed", error=failed.error)
        text = reply.message.text or ""
        if text or not parts:
            parts += [
                partial(self._text_part, credentials, psid, part)
                for part in split_text(text, TEXT_LIMIT)
            ]
        tagged = False  # once a part needed the tag, the rest need it too
        message_id, started = "", utcnow()
        for number, part in enumerate(parts, 1):
            try:
                message_id, started, tagged = await self._send_part(channel, psid, part, tagged)
            except SendFailed as failed:
                return Outcome(
                    "failed",
                    error=partly_sent(failed.error, number - 1, len(parts)),
                    channel_health=failed.health,
                    recipient_unreachable=failed.unreachable,
                )
        return Outcome("sent", message_id, sent_at=started, channel_health="ok")

    async def _text_part(
        self, credentials: Credentials, psid: str, text: str, tag: str | None
    ) -> Sent:
        return await self.graph.send_text(credentials, psid, text, tag=tag)

    async def _file_part(self, credentials: Credentials, psid: str, file: Attachment) -> Part:
        blob = await self.blobs.get(file.blob_key) if file.blob_key else None
        if blob is None:
            raise SendFailed("The file is no longer stored.")
        if blob.size > FILE_LIMIT:
            raise SendFailed(FILE_TOO_LARGE)

        async def send(tag: str | None) -> Sent:
            return await self.graph.send_attachment(
                credentials,
                psid,
                kind=attachment_type(file.mime_type),
                data=blob.data,
                name=file.name or blob.name,
                content_type=file.mime_type or blob.content_type,
                tag=tag,
            )

        return send

    async def _send_part(
        self, channel: Channel, psid: str, part: Part, tagged: bool
    ) -> tuple[str, datetime, bool]:
        """The part's message id, when it was asked for, and whether it went tagged."""
        policy, attempt = self.policy, 1
        while True:
            started = utcnow()
            try:
                sent = await part("HUMAN_AGENT" if tagged else None)
                return sent.message_id, started, tagged
            except GraphUnreachable:
                reason = "Facebook could not be reached"
            except GraphError as exc:
                if exc.outside_window and not tagged:
                    await self._require_human_agent_window(channel, psid)
                    tagged = True
                    continue  # at once: this is another message, not a retry of a failed call
                if exc.outside_window:
                    raise SendFailed(
                        f"Facebook refused the reply even tagged HUMAN_AGENT: {exc.message}"
                    ) from None
                if exc.recipient_unavailable:
                    raise SendFailed(UNAVAILABLE, unreachable=True) from None
                if exc.token_invalid:
                    raise SendFailed(TOKEN_INVALID, "token_invalid") from None
                if exc.rate_limited:
                    reason = "Facebook kept rate-limiting the page"
                elif exc.temporary:
                    reason = "Facebook could not be reached"
                else:
                    raise SendFailed(f"Facebook refused the message: {exc.message}") from None
            if attempt >= policy.attempts:
                raise SendFailed(f"{reason}; gave up after {policy.attempts} attempts.")
            await asyncio.sleep(policy.wait(attempt))
            attempt += 1

    async def _require_human_agent_window(self, channel: Channel, psid: str) -> None:
        """Fail unless a reply refused for the 24-hour window may go again as HUMAN_AGENT."""
        if not channel.human_agent_tag:
            raise SendFailed(WINDOW_CLOSED)
        async with self.db.sessions() as session:
            thread = await session.get(Thread, (channel.id, psid))
        last = thread.last_inbound_at if thread is not None else None
        if last is None or utcnow() - last > HUMAN_AGENT_WINDOW:
            raise SendFailed(AGENT_WINDOW_CLOSED)
