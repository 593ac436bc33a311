"""Each active Telegram channel's link to Telegram, looked after by one ingest process at a time.

- **Webhook mode** (`CHATDESK_PUBLIC_BASE_URL` set): Telegram posts updates to
  `/webhooks/telegram/{id}`. The link makes sure the webhook is registered there (getWebhookInfo;
  setWebhook when it points elsewhere, as after the public URL changed), then asks Telegram every
  `telegram_webhook_check_s` whether it can deliver, flagging the channel `webhook_failing` when
  it cannot.
- **Long polling** (unset): deleteWebhook, then getUpdates in a loop. Updates take the webhook's
  path (`TelegramInbound`: dedup key, one commit with their events); only then does the offset
  move past them, so an update is confirmed to Telegram only once it is committed. The offset is
  kept in `telegram_links` too; a crash between the commit and the next getUpdates gets the same
  updates again, and their dedup keys drop them.

**One process per channel.** Every ingest process runs `Links`. It claims the active channels
with lease rows in `telegram_links` (the same statement renews its own claims and takes over
claims whose lease ran out), runs a link for each channel it holds, and stops a link when the
channel is deactivated, deleted, re-keyed, or claimed by another process. A process that dies
stops renewing; another takes its channels over after `telegram_lease_s`. A process that stops
cleanly releases its claims at once. The API wakes the local supervisor after a change, so a new
channel is linked without waiting for the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramConflictError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.types import Update
from sqlalchemy import Table, or_, select, update

from libs.common.db import Database, insert_ignore, on_postgres
from libs.common.envelope import utcnow
from libs.common.settings import Settings
from services.ingest import channels, telegram_setup
from services.ingest.models import Channel, TelegramLink
from services.ingest.telegram import TOKEN_INVALID, TelegramBots
from services.ingest.telegram_inbound import TelegramInbound

log = logging.getLogger(__name__)

LINKS = cast(Table, TelegramLink.__table__)
# getUpdates is a request that waits: the HTTP timeout must outlast the long-poll timeout.
REQUEST_MARGIN_S = 10
MAX_BACKOFF_S = 30.0
# A refused token will not start working by itself: ask again rarely (a PATCH relinks at once).
REFUSED_TOKEN_WAIT_S = 60.0

Report = Callable[[str, channels.ChannelStatus, str | None], Awaitable[None]]


def new_holder() -> str:
    """This process's name in `telegram_links.holder`: unique per process start."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


# --- the lease rows ----------------------------------------------------------------------------


async def claim(db: Database, holder: str, channel_ids: Sequence[str], lease_s: float) -> set[str]:
    """Of `channel_ids`, those `holder` holds now: its own claims renewed, and channels nobody
    holds or whose holder stopped renewing, taken over."""
    if not channel_ids:
        return set()
    now = utcnow()
    async with db.transaction() as session:
        await session.execute(
            insert_ignore(on_postgres(session), LINKS),
            [{"channel_id": c, "holder": None, "leased_until": now} for c in channel_ids],
        )
        held = await session.scalars(
            update(LINKS)
            .where(
                LINKS.c.channel_id.in_(channel_ids),
                or_(LINKS.c.holder == holder, LINKS.c.leased_until <= now),
            )
            .values(holder=holder, leased_until=now + timedelta(seconds=lease_s))
            .returning(LINKS.c.channel_id)
        )
        return set(held)


async def release(db: Database, holder: str, channel_ids: Sequence[str]) -> None:
    """Give up `holder`'s claims on `channel_ids`: another process may take them at once."""
    if not channel_ids:
        return
    async with db.transaction() as session:
        await session.execute(
            update(LINKS)
            .where(LINKS.c.channel_id.in_(channel_ids), LINKS.c.holder == holder)
            .values(holder=None, leased_until=utcnow())
        )


async def next_update_id(db: Database, channel_id: str) -> int | None:
    async with db.sessions() as session:
        value: int | None = await session.scalar(
            select(LINKS.c.next_update_id).where(LINKS.c.channel_id == channel_id)
        )
        return value


async def save_next_update_id(db: Database, holder: str, channel_id: str, value: int) -> bool:
    """Keep where polling got to; False if `holder` no longer holds the channel."""
    async with db.transaction() as session:
        result = await session.execute(
            update(LINKS)
            .where(LINKS.c.channel_id == channel_id, LINKS.c.holder == holder)
            .values(next_update_id=value)
        )
    return bool(getattr(result, "rowcount", 0))


# --- the supervisor ----------------------------------------------------------------------------


@dataclass
class _Running:
    fingerprint: tuple[str, str, str]
    task: asyncio.Task[None]


def _fingerprint(channel: Channel) -> tuple[str, str, str]:
    """What a running link depends on: a change restarts it."""
    return (channel.token, channel.api_base, channel.secret)


class Links:
    def __init__(
        self,
        db: Database,
        bots: TelegramBots,
        inbound: TelegramInbound,
        settings: Settings,
        *,
        holder: str | None = None,
    ) -> None:
        self.db = db
        self.bots = bots
        self.inbound = inbound
        self.settings = settings
        self.public_base_url = settings.public_base_url
        self.holder = holder or new_holder()
        self.round_s = settings.telegram_lease_s / 6  # renewals well within the lease
        self._running: dict[str, _Running] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def mode(self) -> str:
        return "webhook" if self.public_base_url else "polling"

    async def start(self) -> None:
        log.info("telegram links start", extra={"mode": self.mode, "holder": self.holder})
        self._task = asyncio.create_task(self._supervise(), name="telegram-links")

    def wake(self) -> None:
        """Look at the channels again now (one was created or changed here)."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        held = list(self._running)
        for channel_id in held:
            await self._stop_link(channel_id)
        with contextlib.suppress(Exception):  # shutting down: the lease runs out anyway
            await release(self.db, self.holder, held)

    async def _supervise(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("telegram links: could not look at the channels; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.round_s)

    async def reconcile(self) -> None:
        """One round: claim (and renew), stop what is no longer ours, start what is."""
        active = {c.id: c for c in await channels.active_channels(self.db, "telegram")}
        mine = await claim(self.db, self.holder, list(active), self.settings.telegram_lease_s)
        gone: list[str] = []  # deactivated or deleted: free at once when it comes back
        for channel_id, running in list(self._running.items()):
            channel = active.get(channel_id)
            if (
                channel is None
                or channel_id not in mine
                or running.fingerprint != _fingerprint(channel)
                or running.task.done()
            ):
                await self._stop_link(channel_id)
                if channel is None:
                    gone.append(channel_id)
        await release(self.db, self.holder, gone)
        for channel_id in mine - set(self._running):
            self._start_link(active[channel_id])

    def _start_link(self, channel: Channel) -> None:
        link = self._watch(channel) if self.public_base_url else self._poll(channel)
        task = asyncio.create_task(link, name=f"telegram-{self.mode}:{channel.id}")
        task.add_done_callback(_log_crash)
        self._running[channel.id] = _Running(_fingerprint(channel), task)
        log.info("telegram link up", extra={"channel_id": channel.id, "mode": self.mode})

    async def _stop_link(self, channel_id: str) -> None:
        running = self._running.pop(channel_id)
        running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)
        log.info("telegram link down", extra={"channel_id": channel_id, "mode": self.mode})

    async def _report(
        self, channel: Channel, status: channels.ChannelStatus, reason: str | None
    ) -> None:
        try:
            await channels.set_channel_health(self.db, channel.id, status, reason)
        except Exception:  # the link goes on; the next check reports again
            log.exception("could not record the channel's status", extra={"channel_id": channel.id})

    # --- webhook mode ---------------------------------------------------------------------------

    async def relink(self, channel: Channel) -> None:
        """After a channel was created or re-keyed here: in webhook mode, register its webhook
        now and record how that went; in either mode, let the supervisor see the change."""
        if self.public_base_url and channel.active:
            bot = self.bots.for_channel(channel)
            registration = await telegram_setup.register_webhook(bot, channel, self.public_base_url)
            await self._report_registration(channel, registration)
        self.wake()

    async def unlink(self, channel: Channel) -> None:
        """Before a channel is deleted: Telegram stops posting to a webhook that would 404."""
        if self.public_base_url:
            await telegram_setup.drop_webhook(self.bots.for_channel(channel), channel)
        self.wake()

    async def _report_registration(
        self, channel: Channel, registration: telegram_setup.Registration
    ) -> None:
        if registration.token_refused:
            await self._report(channel, "token_invalid", TOKEN_INVALID)
        elif registration.error is not None:
            await self._report(channel, "webhook_failing", registration.error)
        else:
            await self._report(channel, "ok", None)

    async def _watch(self, channel: Channel) -> None:
        while True:
            await self.check_webhook(channel)
            await asyncio.sleep(self.settings.telegram_webhook_check_s)

    async def check_webhook(self, channel: Channel) -> None:
        """Register the webhook if Telegram has another (or none); else report whether Telegram
        manages to deliver to it."""
        assert self.public_base_url is not None
        bot = self.bots.for_channel(channel)
        try:
            info = await bot.get_webhook_info()
        except TelegramUnauthorizedError:
            await self._report(channel, "token_invalid", TOKEN_INVALID)
            return
        except TelegramAPIError as exc:  # cannot tell: keep what we knew
            log.warning(
                "telegram getWebhookInfo failed",
                extra={"channel_id": channel.id, "why": telegram_setup.reason(exc, channel.token)},
            )
            return
        expected = telegram_setup.webhook_url(self.public_base_url, channel)
        if info.url != expected or sorted(info.allowed_updates or []) != sorted(
            telegram_setup.ALLOWED_UPDATES
        ):
            registration = await telegram_setup.register_webhook(bot, channel, self.public_base_url)
            await self._report_registration(channel, registration)
            return
        within = timedelta(seconds=self.settings.telegram_webhook_check_s)
        trouble = telegram_setup.delivery_trouble(info, within)
        await self._report(channel, "webhook_failing" if trouble else "ok", trouble)

    # --- long polling ---------------------------------------------------------------------------

    async def _poll(self, channel: Channel) -> None:
        bot = self.bots.for_channel(channel)
        # getUpdates refuses to work while a webhook is set (ours from webhook mode, or one set
        # by hand); updates Telegram holds meanwhile are kept for getUpdates.
        await telegram_setup.drop_webhook(bot, channel)
        offset = await next_update_id(self.db, channel.id)
        failures, healthy = 0, False
        while True:
            try:
                updates = await self._get_updates(bot, offset)
            except TelegramUnauthorizedError:
                await self._report(channel, "token_invalid", TOKEN_INVALID)
                healthy = False
                await asyncio.sleep(REFUSED_TOKEN_WAIT_S)
                continue
            except TelegramRetryAfter as exc:
                await asyncio.sleep(exc.retry_after)
                continue
            except TelegramConflictError as exc:
                failures += 1
                self._conflict(channel, exc)
                if "webhook" in exc.message:
                    await telegram_setup.drop_webhook(bot, channel)
                await asyncio.sleep(_backoff(failures))
                continue
            except TelegramAPIError as exc:  # no answer, an outage, anything else
                failures += 1
                log.warning(
                    "telegram getUpdates failed; trying again",
                    extra={
                        "channel_id": channel.id,
                        "why": telegram_setup.reason(exc, channel.token),
                        "failures": failures,
                    },
                )
                await asyncio.sleep(_backoff(failures))
                continue
            failures = 0
            if not healthy:  # the token works and updates come: whatever was flagged is over
                await self._report(channel, "ok", None)
                healthy = True
            if not updates:
                continue
            try:
                await self.inbound.accept(channel, updates)
            except Exception:
                # Not confirmed to Telegram: the same updates come again, and what was
                # committed of them is dropped by its dedup key.
                log.exception("telegram updates not accepted", extra={"channel_id": channel.id})
                await asyncio.sleep(_backoff(1))
                continue
            offset = max(u.update_id for u in updates) + 1
            if not await save_next_update_id(self.db, self.holder, channel.id, offset):
                log.info("telegram channel taken over", extra={"channel_id": channel.id})
                return

    async def _get_updates(self, bot: Bot, offset: int | None) -> list[Update]:
        timeout = self.settings.telegram_poll_timeout_s
        return await bot.get_updates(
            offset=offset,
            timeout=timeout,
            allowed_updates=telegram_setup.ALLOWED_UPDATES,
            request_timeout=timeout + REQUEST_MARGIN_S,
        )

    def _conflict(self, channel: Channel, exc: TelegramConflictError) -> None:
        # Another getUpdates on this bot (another deployment, a script, or a replica in the
        # moment it takes over), or a webhook set meanwhile.
        log.warning(
            "telegram getUpdates conflict",
            extra={"channel_id": channel.id, "why": telegram_setup.reason(exc, channel.token)},
        )


def _backoff(failures: int) -> float:
    return float(min(2 ** (failures - 1), MAX_BACKOFF_S))


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "telegram link crashed; restarted on the next round",
            exc_info=task.exception(),
            extra={"task": task.get_name()},
        )
