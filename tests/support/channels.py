"""A Telegram channel stored straight in ingest's tables, for tests of ingest's own workers."""

from __future__ import annotations

from libs.common.db import Database
from libs.common.envelope import new_id, utcnow
from services.ingest.models import Channel


async def stored_telegram_channel(db: Database, api_base: str, token: str) -> Channel:
    channel = Channel(
        id=new_id(),
        kind="telegram",
        name="Support bot",
        queue_id=new_id(),
        api_base=api_base,
        token=token,
        secret="s3cret",
        human_agent_tag=False,
        status="ok",
        active=True,
        created_at=utcnow(),
    )
    async with db.transaction() as session:
        session.add(channel)
    return channel
