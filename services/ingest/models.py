"""ingest's tables: channels (with their secrets), inbound dedup keys, outbound deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy import String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from libs.common.db import UTCDateTime, bus_tables
from libs.common.envelope import utcnow


class Base(DeclarativeBase):
    pass


outbox, inbox = bus_tables(Base.metadata)


class Channel(Base):
    __tablename__ = "channels"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    queue_id: Mapped[str] = mapped_column(String(36))
    api_base: Mapped[str] = mapped_column(String(500))
    # Secrets: never returned by the API, never put in events or logs.
    token: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InboundKey(Base):
    """One row per platform message we accepted: a repeated delivery finds its key here."""

    __tablename__ = "inbound_keys"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Delivery(Base):
    """What became of one outgoing message on its platform."""

    __tablename__ = "deliveries"

    message_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    chat_id: Mapped[str] = mapped_column(String(36))
    channel_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(20))
    platform_message_id: Mapped[str | None] = mapped_column(String(100))
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


TELEGRAM_TOKEN_PATTERN = r"^\d+:[A-Za-z0-9_-]+$"
TELEGRAM_SECRET_PATTERN = r"^[A-Za-z0-9_-]{1,256}$"


class TelegramChannelIn(BaseModel):
    kind: Literal["telegram"]
    name: str = Field(min_length=1, max_length=200)
    queue_id: str = Field(min_length=1, max_length=36)
    token: str = Field(pattern=TELEGRAM_TOKEN_PATTERN, description="Bot token from @BotFather.")
    secret: str = Field(
        pattern=TELEGRAM_SECRET_PATTERN,
        description="Telegram sends it back in X-Telegram-Bot-Api-Secret-Token.",
    )
    api_base: str | None = Field(default=None, pattern=r"^https?://", max_length=500)


class ChannelOut(BaseModel):
    """A channel as the API shows it: no token, no secret."""

    id: str
    kind: str
    name: str
    queue_id: str
    api_base: str
    active: bool
    created_at: datetime
    webhook_path: str

    @classmethod
    def of(cls, channel: Channel) -> ChannelOut:
        return cls(
            id=channel.id,
            kind=channel.kind,
            name=channel.name,
            queue_id=channel.queue_id,
            api_base=channel.api_base,
            active=channel.active,
            created_at=channel.created_at,
            webhook_path=f"/webhooks/{channel.kind}/{channel.id}",
        )
