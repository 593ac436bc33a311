"""chat's tables: chats and their messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from libs.common.db import UTCDateTime, bus_tables
from libs.common.envelope import utcnow
from libs.common.events import Attachment, MessageView


class Base(DeclarativeBase):
    pass


outbox, inbox = bus_tables(Base.metadata)

OPEN = "status <> 'completed'"


class Chat(Base):
    __tablename__ = "chats"
    __table_args__ = (
        # The rule that threads messages: one open chat per contact and conversation (a
        # channel and the customer's chat on it). A contact has one conversation per channel
        # until merged contacts bring theirs: each stays a chat of its own, so that replies
        # go where the customer wrote.
        Index(
            "one_open_chat_per_conversation",
            "contact_id",
            "channel_id",
            "external_chat_id",
            unique=True,
            postgresql_where=text(OPEN),
            sqlite_where=text(OPEN),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(36), index=True)
    contact_name: Mapped[str] = mapped_column(String(300))
    channel_id: Mapped[str] = mapped_column(String(36))
    queue_id: Mapped[str] = mapped_column(String(36))
    platform: Mapped[str] = mapped_column(String(20))
    external_chat_id: Mapped[str] = mapped_column(String(100))
    # new (waiting or offered) -> active (accepted) -> completed
    status: Mapped[str] = mapped_column(String(20), default="new")
    # Mirrors routing: the agent the chat is offered to, then its owner.
    agent_id: Mapped[str | None] = mapped_column(String(36), index=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_message_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_message_preview: Mapped[str] = mapped_column(String(200), default="")


class MergedContact(Base):
    """A contact merged into another (from `contact.merged`): a message attributed to it
    before the merge, but threaded after, goes to the survivor's chats."""

    __tablename__ = "merged_contacts"

    merged_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    survivor_id: Mapped[str] = mapped_column(String(36), index=True)
    survivor_name: Mapped[str] = mapped_column(String(300))


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("chat_id", "external_message_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    chat_id: Mapped[str] = mapped_column(ForeignKey("chats.id"), index=True)
    direction: Mapped[str] = mapped_column(String(3))
    text: Mapped[str | None] = mapped_column(Text)
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    external_message_id: Mapped[str | None] = mapped_column(String(100))
    author_agent_id: Mapped[str | None] = mapped_column(String(36))
    delivery_status: Mapped[str | None] = mapped_column(String(20))
    delivery_error: Mapped[str | None] = mapped_column(Text)

    def view(self) -> MessageView:
        return MessageView(
            id=self.id,
            chat_id=self.chat_id,
            direction=self.direction,
            text=self.text,
            attachments=[Attachment.model_validate(a) for a in self.attachments],
            created_at=self.created_at,
            author_agent_id=self.author_agent_id,
            delivery_status=self.delivery_status,
            delivery_error=self.delivery_error,
        )


class ChatOut(BaseModel):
    id: str
    status: str
    contact_id: str
    contact_name: str
    channel_id: str
    queue_id: str
    agent_id: str | None
    platform: str
    opened_at: datetime
    accepted_at: datetime | None
    completed_at: datetime | None
    last_message_at: datetime
    last_message_preview: str

    @classmethod
    def of(cls, chat: Chat) -> ChatOut:
        return cls.model_validate(chat, from_attributes=True)


class TimelineChat(ChatOut):
    """A chat on its contact's timeline: the chat with its messages (and their files)."""

    messages: list[MessageView]


class ReplyIn(BaseModel):
    agent_id: str
    text: str = Field(min_length=1, max_length=20_000)


class CompleteIn(BaseModel):
    agent_id: str | None = None
