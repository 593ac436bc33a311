"""contacts' tables: contacts and the platform identities that reached us."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from libs.common.db import UTCDateTime, bus_tables
from libs.common.envelope import utcnow


class Base(DeclarativeBase):
    pass


outbox, inbox = bus_tables(Base.metadata)


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The profile picture, in the blob store (ingest fetches it from the platform).
    picture_key: Mapped[str | None] = mapped_column(String(64))
    picture_type: Mapped[str | None] = mapped_column(String(200))


class Identity(Base):
    """One (platform, platform user id, channel) that wrote to us, and whose contact it is."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("platform", "external_user_id", "channel_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id"), index=True)
    platform: Mapped[str] = mapped_column(String(20))
    external_user_id: Mapped[str] = mapped_column(String(100))
    channel_id: Mapped[str] = mapped_column(String(36))
    username: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when the platform refused a message because the customer cannot receive it from this
    # channel (blocked the bot, deleted the account); cleared when they write again.
    unreachable_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unreachable_reason: Mapped[str | None] = mapped_column(Text)


class IdentityOut(BaseModel):
    platform: str
    external_user_id: str
    channel_id: str
    username: str | None
    unreachable: bool = Field(
        description="The customer cannot receive messages from this channel (they blocked the "
        "bot or deleted their account): replies fail until they write again."
    )
    unreachable_since: datetime | None
    unreachable_reason: str | None


class PictureOut(BaseModel):
    blob_key: str
    content_type: str


class ContactOut(BaseModel):
    id: str
    name: str
    created_at: datetime
    identities: list[IdentityOut]
    picture: PictureOut | None = None
