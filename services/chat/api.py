"""chat's internal HTTP API, used by the gateway."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import Database
from libs.common.events import MessageView
from services.chat import service
from services.chat.models import (
    AttachmentOut,
    Chat,
    ChatOut,
    CompleteIn,
    ReplyIn,
    TimelineChat,
)


def internal_router(db: Database) -> APIRouter:
    router = APIRouter(prefix="/internal")

    async def load(session: AsyncSession, chat_id: str, *, lock: bool = False) -> Chat:
        """The chat; `lock`: locked until the transaction ends, for a change that depends on
        what it reads (a reply ends the customer's wait that a message may be starting)."""
        chat = await session.get(Chat, chat_id, with_for_update=lock)
        if chat is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown chat")
        return chat

    @router.get("/chats")
    async def list_chats(
        ids: Annotated[str, Query(description="Comma-separated chat ids")] = "",
    ) -> list[ChatOut]:
        async with db.sessions() as session:
            chats = await service.chats_by_ids(session, [i for i in ids.split(",") if i])
        return [ChatOut.of(c) for c in chats]

    @router.get("/chats/{chat_id}")
    async def get_chat(chat_id: str) -> ChatOut:
        async with db.sessions() as session:
            return ChatOut.of(await load(session, chat_id))

    @router.get("/chats/{chat_id}/messages")
    async def list_messages(chat_id: str) -> list[MessageView]:
        async with db.sessions() as session:
            await load(session, chat_id)
            return await service.messages_of(session, chat_id)

    @router.get("/channels/{channel_id}/usage")
    async def channel_usage(channel_id: str) -> dict[str, int]:
        """What the channel has in chat: a channel with chats is deactivated, not deleted."""
        async with db.sessions() as session:
            return {"chats": await service.chats_of_channel(session, channel_id)}

    @router.get("/contacts/{contact_id}/timeline")
    async def timeline(
        contact_id: str,
        before: Annotated[
            datetime | None, Query(description="Only chats opened before this (next page).")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> list[TimelineChat]:
        """The contact's chats, newest first, each with its messages in the platform's order."""
        async with db.sessions() as session:
            chats = await service.chats_of_contact(session, contact_id, before=before, limit=limit)
            messages = await service.messages_of_chats(session, [c.id for c in chats])
        return [TimelineChat(**ChatOut.of(c).model_dump(), messages=messages[c.id]) for c in chats]

    @router.post("/chats/{chat_id}/replies", status_code=status.HTTP_201_CREATED)
    async def post_reply(chat_id: str, reply: ReplyIn) -> MessageView:
        async with db.transaction() as session:
            chat = await load(session, chat_id, lock=True)
            try:
                return await service.post_reply(
                    session, chat, reply.agent_id, reply.text, reply.file
                )
            except service.ChatClosed as exc:
                raise HTTPException(status.HTTP_409_CONFLICT, "the chat is completed") from exc

    @router.get("/attachments/{attachment_id}")
    async def get_attachment(attachment_id: str) -> AttachmentOut:
        async with db.sessions() as session:
            found = await service.get_file(session, attachment_id)
        if found is None or found.chat_id is None or found.message_id is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown file")
        return AttachmentOut.model_validate(found, from_attributes=True)

    @router.post("/chats/{chat_id}/complete")
    async def complete(chat_id: str, body: CompleteIn) -> ChatOut:
        async with db.transaction() as session:
            chat = await load(session, chat_id, lock=True)
            await service.complete(session, chat, body.agent_id)
        return ChatOut.of(chat)

    return router
