"""Customers' edits of their messages (Telegram's `edited_message`).

An edit names its message by channel, platform chat and platform message id. It goes from ingest
straight to chat, while the message it edits goes through contacts first: a quick edit can
arrive before its message. Such an edit is kept in `pending_edits`, and `PendingEdits` applies it
once the message is stored (it looks every `interval_s`; an edit whose message never comes, as
for a message sent before the channel existed, is dropped after a day). Applying an edit directly
when the message is stored would close that gap too, but would cost every customer message a
statement on chat's hottest path, for the rare edit that overtakes its message.

Edits can overtake each other too: an edit older than the message's last one is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import Database, dialect_insert, emit, on_postgres
from libs.common.envelope import utcnow
from libs.common.events import ChatMessageEdited, InboundEdited
from services.chat.models import Chat, Message, PendingEdit
from services.chat.service import files_of

log = logging.getLogger(__name__)

PENDING_TTL = timedelta(days=1)
PENDING = cast(Table, PendingEdit.__table__)


async def _find(
    session: AsyncSession, channel_id: str, external_chat_id: str, external_message_id: str
) -> tuple[Message, Chat] | None:
    row = (
        await session.execute(
            select(Message, Chat)
            .join(Chat, Message.chat_id == Chat.id)
            .where(
                Chat.channel_id == channel_id,
                Chat.external_chat_id == external_chat_id,
                Message.external_message_id == external_message_id,
                Message.direction == "in",
            )
            .limit(1)
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


async def _apply(
    session: AsyncSession, message: Message, chat: Chat, text: str | None, edited_at: datetime
) -> bool:
    """Take the edit unless the message already has a later one; announce it."""
    if message.edited_at is not None and message.edited_at >= edited_at:
        return False
    message.text = text
    message.edited_at = edited_at
    emit(
        session,
        ChatMessageEdited(
            chat_id=chat.id,
            agent_id=chat.agent_id,
            message=message.view((await files_of(session, [message.id])).get(message.id, [])),
        ),
        subject=chat.id,
    )
    return True


async def apply_edit(session: AsyncSession, edit: InboundEdited) -> None:
    """Edit the message now if it is stored, else keep the edit for when it is."""
    found = await _find(session, edit.channel_id, edit.external_chat_id, edit.external_message_id)
    if found is not None:
        await _apply(session, *found, edit.text, edit.edited_at)
        return
    upsert = dialect_insert(on_postgres(session), PENDING)
    await session.execute(
        upsert.values(
            channel_id=edit.channel_id,
            external_chat_id=edit.external_chat_id,
            external_message_id=edit.external_message_id,
            text=edit.text,
            edited_at=edit.edited_at,
            received_at=edit.received_at,
        ).on_conflict_do_update(
            index_elements=["channel_id", "external_chat_id", "external_message_id"],
            set_={"text": upsert.excluded.text, "edited_at": upsert.excluded.edited_at},
            where=PENDING.c.edited_at < upsert.excluded.edited_at,
        )
    )


async def apply_pending(session: AsyncSession, limit: int = 100) -> int:
    """Apply the kept edits whose message is stored now; drop those too old to expect it.
    Replicas share the work: each takes rows the others have not locked."""
    pending = list(
        await session.scalars(
            select(PendingEdit)
            .order_by(PendingEdit.received_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    applied, expired = 0, utcnow() - PENDING_TTL
    for edit in pending:
        found = await _find(
            session, edit.channel_id, edit.external_chat_id, edit.external_message_id
        )
        if found is not None:
            applied += await _apply(session, *found, edit.text, edit.edited_at)
        elif edit.received_at > expired:
            continue
        else:
            log.info("edit of a message that never came dropped", extra=_where(edit))
        await session.delete(edit)
    return applied


def _where(edit: PendingEdit) -> dict[str, str]:
    return {"channel_id": edit.channel_id, "external_message_id": edit.external_message_id}


class PendingEdits:
    """The background task that applies kept edits."""

    def __init__(self, db: Database, interval_s: float = 1.0) -> None:
        self.db = db
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chat:pending-edits")

    async def _run(self) -> None:
        while True:
            try:
                # A read first: the table is empty nearly always, and a write transaction
                # would take SQLite's only writer slot every time.
                async with self.db.sessions() as session:
                    waiting = await session.scalar(select(exists().select_from(PENDING)))
                if waiting:
                    async with self.db.transaction() as session:
                        await apply_pending(session)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pending edits: failed; trying again")
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
