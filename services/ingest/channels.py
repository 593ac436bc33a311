"""ingest's channels: creating them (with the platform's word on their credentials), changing
their settings, deactivating or deleting them, their health, and the cache the webhooks read
them from."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Select, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import Database
from libs.common.envelope import new_id, utcnow
from libs.common.settings import Settings
from services.ingest import telegram_setup
from services.ingest.meta.graph import Credentials, Graph, GraphError, GraphUnreachable
from services.ingest.models import (
    PATCHABLE,
    Channel,
    ChannelPatch,
    FacebookChannelIn,
    TelegramChannelIn,
    TelegramLink,
)

# ok; token_invalid: the platform refuses the token; webhook_failing: Telegram refused our
# webhook, or cannot deliver to it. `status_reason` says why.
ChannelStatus = Literal["ok", "token_invalid", "webhook_failing"]


class ChannelRefused(Exception):
    """A channel that cannot be created as asked: `status` and `detail` for the API."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def check_facebook_page(graph: Graph, credentials: Credentials, page_id: str) -> None:
    """Refuse a page token that Meta does not accept as the token of page `page_id`."""
    try:
        page = await graph.page(credentials)
    except GraphUnreachable as exc:
        raise ChannelRefused(
            502, f"Facebook could not be reached to check the token ({exc})"
        ) from exc
    except GraphError as exc:
        if exc.temporary:
            raise ChannelRefused(502, "Facebook failed to check the token; try again") from exc
        raise ChannelRefused(422, f"Facebook refused the page token: {exc.message}") from exc
    if page.id != page_id:
        raise ChannelRefused(
            422,
            f"the token speaks for {page.id!r}, not for page {page_id!r}: use a page "
            "access token of that page",
        )


@dataclass(frozen=True)
class Account:
    """The channel's own account on its platform (a page, a bot), as the platform names it."""

    id: str
    name: str | None = None


async def check_telegram_token(token: str, api_base: str, bot_id: str | None = None) -> Account:
    """The bot a token belongs to, by getMe; refused if Telegram refuses it, or if it belongs to
    another bot than `bot_id`."""
    try:
        bot = await telegram_setup.check_token(token, api_base)
    except telegram_setup.TokenRefused as exc:
        raise ChannelRefused(422, str(exc)) from None
    except telegram_setup.TelegramUnavailable as exc:
        raise ChannelRefused(502, str(exc)) from None
    if bot_id is not None and str(bot.id) != bot_id:
        raise ChannelRefused(
            422,
            f"the token is of bot {bot.id} (@{bot.username}), not of this channel's bot "
            f"{bot_id}: a channel keeps its bot (create another channel for another bot)",
        )
    return Account(str(bot.id), bot.username)


async def check_new_channel(
    graph: Graph, data: TelegramChannelIn | FacebookChannelIn, settings: Settings
) -> Account:
    if isinstance(data, FacebookChannelIn):
        credentials = Credentials(
            facebook_api_base(data, settings), data.page_token, data.app_secret
        )
        await check_facebook_page(graph, credentials, data.page_id)
        return Account(data.page_id)
    return await check_telegram_token(data.token, telegram_api_base(data, settings))


async def create_channel(
    session: AsyncSession,
    data: TelegramChannelIn | FacebookChannelIn,
    settings: Settings,
    account: Account,
) -> Channel:
    """A new channel of `account` (checked with the platform by `check_new_channel`); refused
    when the account already has one: a page or a bot is one channel."""
    channel = Channel(
        id=new_id(),
        kind=data.kind,
        name=data.name,
        queue_id=data.queue_id,
        human_agent_tag=False,
        status="ok",
        active=True,
        created_at=utcnow(),
    )
    taken = await session.scalar(
        select(Channel.id).where(Channel.kind == data.kind, Channel.external_id == account.id)
    )
    if taken is not None:
        what = f"page {account.id}" if data.kind == "facebook" else f"bot {account.id}"
        raise ChannelRefused(409, f"{what} already has channel {taken}")
    channel.external_id, channel.external_name = account.id, account.name
    if isinstance(data, FacebookChannelIn):
        channel.api_base = facebook_api_base(data, settings)
        channel.token, channel.secret = data.page_token, data.app_secret
        channel.verify_token = data.verify_token
        channel.human_agent_tag = data.human_agent_tag
    else:
        channel.api_base = telegram_api_base(data, settings)
        channel.token, channel.secret = data.token, data.secret
    session.add(channel)
    return channel


def facebook_api_base(data: FacebookChannelIn, settings: Settings) -> str:
    return (data.api_base or settings.facebook_api_base).rstrip("/")


def telegram_api_base(data: TelegramChannelIn, settings: Settings) -> str:
    return (data.api_base or settings.telegram_api_base).rstrip("/")


async def get_channel(session: AsyncSession, channel_id: str) -> Channel | None:
    return await session.get(Channel, channel_id)


async def check_patch(graph: Graph, channel: Channel, patch: ChannelPatch) -> None:
    """Refuse settings the channel's kind does not have, and new credentials the platform
    refuses (or that are another page's, another bot's)."""
    foreign = patch.fields() - PATCHABLE[channel.kind]
    if foreign:
        raise ChannelRefused(422, f"a {channel.kind} channel has no {', '.join(sorted(foreign))}")
    if channel.kind == "telegram" and patch.token is not None:
        await check_telegram_token(patch.token, channel.api_base, channel.external_id)
    if channel.kind == "facebook" and patch.fields() & {"page_token", "app_secret"}:
        credentials = Credentials(
            channel.api_base,
            patch.page_token or channel.token,
            patch.app_secret or channel.secret,
        )
        await check_facebook_page(graph, credentials, channel.external_id or "")


def apply_patch(channel: Channel, patch: ChannelPatch) -> None:
    """Take the new settings (checked by `check_patch`); new credentials clear the health flag."""
    channel.name = patch.name or channel.name
    channel.token = patch.token or patch.page_token or channel.token
    channel.secret = patch.secret or patch.app_secret or channel.secret
    channel.verify_token = patch.verify_token or channel.verify_token
    if patch.human_agent_tag is not None:
        channel.human_agent_tag = patch.human_agent_tag
    if patch.active is not None:
        channel.active = patch.active
    if patch.fields() & {"token", "page_token"}:
        channel.status, channel.status_reason = "ok", None


def relinks_telegram(patch: ChannelPatch) -> bool:
    """Whether Telegram must be told of the change: the webhook goes with the token and the
    secret, and `active: true` registers it again (which is also how to retry a failed one)."""
    return bool(patch.fields() & {"token", "secret"}) or patch.active is True


async def set_channel_health(
    db: Database, channel_id: str, health: ChannelStatus, reason: str | None = None
) -> None:
    """Record what the platform last said of the channel; writes only if that changes it."""
    async with db.transaction() as session:
        await session.execute(
            update(Channel)
            .where(
                Channel.id == channel_id,
                or_(
                    Channel.status != health,
                    Channel.status_reason.is_distinct_from(reason),
                ),
            )
            .values(status=health, status_reason=reason)
        )


async def delete_channel(session: AsyncSession, channel_id: str) -> Channel | None:
    """Delete a channel (the caller made sure it has no chats); None if there is none."""
    channel = await session.get(Channel, channel_id)
    if channel is not None:
        await session.execute(delete(TelegramLink).where(TelegramLink.channel_id == channel_id))
        await session.delete(channel)
    return channel


async def active_channels(db: Database, kind: str) -> list[Channel]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(Channel).where(Channel.kind == kind, Channel.active.is_(True))
        )
        return list(rows)


class ChannelCache:
    """Channels by id (and Facebook channels by page) for the webhooks, re-read after `ttl_s`:
    one query less per update.

    A deactivated channel or a changed secret takes effect within `ttl_s`.
    """

    def __init__(self, db: Database, ttl_s: float = 5.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._entries: dict[tuple[str, str], tuple[float, Channel | None]] = {}

    async def get(self, channel_id: str) -> Channel | None:
        return await self._cached(
            ("id", channel_id), lambda: select(Channel).where(Channel.id == channel_id)
        )

    async def facebook_page(self, page_id: str) -> Channel | None:
        return await self._cached(
            ("facebook", page_id),
            lambda: select(Channel).where(
                Channel.kind == "facebook", Channel.external_id == page_id
            ),
        )

    def forget(self, channel: Channel) -> None:
        """Drop what is cached of a channel this process just changed."""
        self._entries.pop(("id", channel.id), None)
        if channel.external_id is not None:
            self._entries.pop((channel.kind, channel.external_id), None)

    async def _cached(
        self, key: tuple[str, str], query: Callable[[], Select[Channel]]
    ) -> Channel | None:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is None or now - entry[0] > self.ttl_s:
            # The query is built only on a miss: building it cost more than the lookup it saves.
            async with self.db.sessions() as session:
                channel = await session.scalar(query())
            if len(self._entries) > 10_000:  # unknown ids posted at us must not grow it forever
                self._entries.clear()
            entry = self._entries[key] = (now, channel)
        return entry[1]


async def list_channels(session: AsyncSession) -> list[Channel]:
    return list((await session.scalars(select(Channel).order_by(Channel.created_at))).all())


def secret_matches(expected: str | None, presented: str | None) -> bool:
    """Constant-time comparison of a webhook secret (Telegram's, Meta's verify token)."""
    return (
        expected is not None
        and presented is not None
        and hmac.compare_digest(presented.encode(), expected.encode())
    )
