"""Tells routing which agents have a console open on this gateway.

Routing treats an agent whose every console has been gone for the grace period as logged out
(and a console coming back as a login). Each gateway reports its own connections three times
per grace period and at every new connection, so a replica that dies simply stops reporting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from fastapi import HTTPException

from services.gateway.peers import Peers
from services.gateway.push import Hub

log = logging.getLogger(__name__)


class Presence:
    def __init__(self, peers: Peers, hub: Hub, grace_s: float) -> None:
        self.peers = peers
        self.hub = hub
        self.interval_s = grace_s / 3
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway:presence")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def report(self, agent_ids: Sequence[str]) -> None:
        try:
            await self.peers.put("routing", "/internal/presence", {"agent_ids": list(agent_ids)})
        except HTTPException as exc:  # the next report tries again, well within the grace
            log.warning("could not report open consoles to routing: %s", exc.detail)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            agent_ids = self.hub.agents()
            if agent_ids:
                await self.report(agent_ids)
