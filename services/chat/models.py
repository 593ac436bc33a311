"""chat's tables: chats, their messages, the messages' files, and customers' edits waiting for
their message."""

from __future__ import annotations

from datetime import datetime
from typing import Self

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, text
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
        # An edit names its message by channel, platform chat and platform message id.
        Index("chats_by_platform_chat", "channel_id", "external_chat_id"),
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
    # The first customer message no reply has followed yet (null: answered). Its start is
    # announced once (`chat.customer_waiting`), so that routing's reply timer needs no word of
    # every message.
    awaiting_reply_since: Mapped[datetime | None] = mapped_column(UTCDateTime)


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
    # When chatdesk got it (a customer's) or when the agent posted it.
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    external_message_id: Mapped[str | None] = mapped_column(String(100))
    # A customer's message: when the platform says it was sent, and the platform's number of it
    # in its chat (Telegram): the conversation is shown in that order (`ordering.py`).
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sequence: Mapped[int | None] = mapped_column(BigInteger)
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    author_agent_id: Mapped[str | None] = mapped_column(String(36))
    delivery_status: Mapped[str | None] = mapped_column(String(20))
    delivery_error: Mapped[str | None] = mapped_column(Text)

    def view(self, attachments: list[Attachment]) -> MessageView:
        return MessageView(
            id=self.id,
            chat_id=self.chat_id,
            direction=self.direction,
            text=self.text,
            attachments=attachments,
            created_at=self.created_at,
            author_agent_id=self.author_agent_id,
            sent_at=self.sent_at,
            sequence=self.sequence,
            edited_at=self.edited_at,
            delivery_status=self.delivery_status,
            delivery_error=self.delivery_error,
        )


class MessageFile(Base):
    """A file of a message, and how far getting it has come.

    ingest may report a customer's file before the message reaches chat (the download races the
    contact lookup): the row is then made from the report, without `message_id`, and the message
    joins it when it arrives.
    """

    __tablename__ = "attachments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    message_id: Mapped[str | None] = mapped_column(String(36), index=True)
    chat_id: Mapped[str | None] = mapped_column(String(36))
    position: Mapped[int] = mapped_column(default=0)
    kind: Mapped[str] = mapped_column(String(30))
    name: Mapped[str | None] = mapped_column(String(300))
    mime_type: Mapped[str | None] = mapped_column(String(200))
    size: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    blob_key: Mapped[str | None] = mapped_column(String(64))

    def view(self) -> Attachment:
        return Attachment.model_validate(self, from_attributes=True)


class AttachmentOut(BaseModel):
    """A file as the gateway needs it to serve it: whose chat, and where its bytes are."""

    id: str
    chat_id: str
    message_id: str
    kind: str
    name: str | None
    mime_type: str | None
    size: int | None
    state: str
    blob_key: str | None


class PendingEdit(Base):
    """A customer's edit that came before the message it edits (it skips contacts, the message
    does not): applied once the message is stored (`edits.py`)."""

    __tablename__ = "pending_edits"

    channel_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    external_chat_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    external_message_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    text: Mapped[str | None] = mapped_column(Text)
    edited_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


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


class ReplyFile(BaseModel):
    """An agent's file, already in the blob store."""

    blob_key: str = Field(pattern=r"^[0-9a-f]{64}$")
    kind: str = Field(pattern=r"^(photo|document)$")
    name: str = Field(min_length=1, max_length=300)
    mime_type: str = Field(min_length=1, max_length=200)
    size: int = Field(ge=1)


class TimelineChat(ChatOut):
    """A chat on its contact's timeline: the chat with its messages (and their files)."""

    messages: list[MessageView]


class ReplyIn(BaseModel):
    agent_id: str
    text: str | None = Field(default=None, min_length=1, max_length=20_000)
    file: ReplyFile | None = None

    @model_validator(mode="after")
    def _something_to_send(self) -> Self:
        if self.text is None and self.file is None:
            raise ValueError("a reply needs text or a file")
        return self


class CompleteIn(BaseModel):
    agent_id: str | None = None
