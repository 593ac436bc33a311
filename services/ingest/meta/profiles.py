"""Who wrote to a page: the User Profile API, asked once per customer and kept for a day.

A Messenger webhook names the sender only by PSID; the contact needs a name before the message
is published, so the webhook asks here first. The call has a short timeout and never fails the
webhook: without a profile (Meta's 100/2018218 "no profile", an outage) the customer is named
"Facebook user <last digits of the PSID>", so agents can still tell customers apart.

`profile()` answers the whole `Profile`, `profile_pic` included: that URL expires, so whatever
keeps customers' pictures downloads it from there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from libs.common.events import Sender
from services.ingest.meta.graph import Credentials, Graph, GraphError, GraphUnreachable, Profile
from services.ingest.models import Channel

log = logging.getLogger(__name__)


def fallback_sender(psid: str) -> Sender:
    return Sender(first_name=f"Facebook user {psid[-4:]}")


class Profiles:
    def __init__(
        self,
        graph: Graph,
        on_token_invalid: Callable[[Channel], Awaitable[None]],
        *,
        timeout_s: float = 3.0,
        ttl_s: float = 24 * 3600,
        refused_ttl_s: float = 3600,  # Meta said no: asking again soon would say no again
        failed_ttl_s: float = 60,  # an outage: try again shortly, not on every message
        max_entries: int = 10_000,
    ) -> None:
        self.graph = graph
        self.on_token_invalid = on_token_invalid
        self.timeout_s = timeout_s
        self.ttl_s, self.refused_ttl_s, self.failed_ttl_s = ttl_s, refused_ttl_s, failed_ttl_s
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str], tuple[float, Profile | None]] = {}
        # One request per customer at a time: a burst of their messages shares it.
        self._fetches: dict[tuple[str, str], asyncio.Future[Profile | None]] = {}

    async def sender(self, channel: Channel, psid: str) -> Sender:
        profile = await self.profile(channel, psid)
        if profile is None or not (profile.first_name or profile.last_name):
            return fallback_sender(psid)
        return Sender(first_name=profile.first_name, last_name=profile.last_name)

    async def profile(self, channel: Channel, psid: str) -> Profile | None:
        key = (channel.id, psid)
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        fetch = self._fetches.get(key)
        if fetch is None:
            fetch = self._fetches[key] = asyncio.ensure_future(self._fetch(channel, psid))
            fetch.add_done_callback(lambda _: self._fetches.pop(key, None))
        # Shielded: a webhook request that goes away must not cancel its neighbours' answer.
        return await asyncio.shield(fetch)

    async def _fetch(self, channel: Channel, psid: str) -> Profile | None:
        profile: Profile | None = None
        try:
            profile = await self.graph.profile(Credentials.of(channel), psid, self.timeout_s)
            ttl = self.ttl_s
        except GraphError as exc:
            log.info(
                "facebook profile unavailable",
                extra={"channel_id": channel.id, "code": exc.code, "subcode": exc.subcode},
            )
            ttl = self.failed_ttl_s if exc.temporary else self.refused_ttl_s
            if exc.token_invalid:
                await self._flag(channel)
        except GraphUnreachable as exc:
            log.warning("facebook profile: Graph API unreachable (%s)", exc)
            ttl = self.failed_ttl_s
        except Exception:  # a name is a nicety: the message must go through without one
            log.exception("facebook profile lookup failed")
            ttl = self.failed_ttl_s
        self._remember((channel.id, psid), profile, ttl)
        return profile

    async def _flag(self, channel: Channel) -> None:
        try:
            await self.on_token_invalid(channel)
        except Exception:  # the name can wait; the next reply flags the channel as well
            log.exception("could not flag the channel's token as invalid")

    def _remember(self, key: tuple[str, str], profile: Profile | None, ttl: float) -> None:
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)))  # the oldest
        self._entries[key] = (time.monotonic() + ttl, profile)
