"""contacts' tables: contacts, the platform identities that reached us, the candidate index of
names, duplicate rules, the duplicate searches made for new chats, and merges."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from libs.common.db import UTCDateTime, bus_tables
from libs.common.envelope import utcnow


class Base(DeclarativeBase):
    pass


outbox, inbox = bus_tables(Base.metadata)


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (Index("contacts_account_key", "account_key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    # `names.name_key(name)`: what the duplicate search compares.
    name_key: Mapped[str] = mapped_column(String(300), default="")
    account: Mapped[str | None] = mapped_column(String(200))
    account_key: Mapped[str | None] = mapped_column(String(200))  # casefolded, spaces squeezed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The profile picture, in the blob store (ingest fetches it from the platform).
    picture_key: Mapped[str | None] = mapped_column(String(64))
    picture_type: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set when merged into another contact (the survivor, always a live one): the id answers
    # 410 with it, and in-flight events naming this id are re-pointed by their consumers.
    merged_into: Mapped[str | None] = mapped_column(String(36), index=True)
    merged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ContactPoint(Base):
    """A contact's phone number or e-mail address, normalized (`details.py`): the "same phone"
    and "same e-mail" rules look them up by value."""

    __tablename__ = "contact_points"
    __table_args__ = (Index("contact_points_value", "kind", "value"),)

    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)  # phone | email
    value: Mapped[str] = mapped_column(String(320), primary_key=True)
    position: Mapped[int] = mapped_column(SmallInteger)  # the order the contact lists them in


class NameWord(Base):
    """The candidate index of names: each word of a live contact's name key (initials left
    out), with the number of words of that name. A search looks up every spelling one edit
    away from the searched name's words (`duplicates.py`, decision 16 in docs/architecture.md).
    """

    __tablename__ = "name_words"
    __table_args__ = (
        # Covering: the search reads nothing else, so PostgreSQL answers from the index alone.
        Index("name_words_lookup", "word", "words", "contact_id", "full_words"),
    )

    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id"), primary_key=True)
    word: Mapped[str] = mapped_column(String(300), primary_key=True)
    words: Mapped[int] = mapped_column(SmallInteger)  # words of the name, initials included
    full_words: Mapped[int] = mapped_column(SmallInteger)  # initials not included


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


class DuplicateRule(Base):
    """When two contacts may be one person: every condition must hold (see `rules.py`)."""

    __tablename__ = "duplicate_rules"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_by: Mapped[str | None] = mapped_column(String(36))  # agent id; null for the seed


class DuplicateSearch(Base):
    """The duplicate search made for a new chat: its result, and who holds the chat (known
    from routing's offers), so that the result reaches that agent's console."""

    __tablename__ = "duplicate_searches"
    __table_args__ = (Index("duplicate_searches_contact", "contact_id", "searched_at"),)

    chat_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(36))
    agent_id: Mapped[str | None] = mapped_column(String(36))
    searched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    count: Mapped[int] = mapped_column(Integer, default=0)
    # [{contact_id, score, rule_id, rule_name}], best first, at most `duplicates.KEEP`.
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class Merge(Base):
    """A merge, as recorded: who, when, and what moved to the survivor."""

    __tablename__ = "merges"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    survivor_id: Mapped[str] = mapped_column(String(36), index=True)
    merged_ids: Mapped[list[str]] = mapped_column(JSON)
    merged_by: Mapped[str | None] = mapped_column(String(36))  # agent id
    merged_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # {"identities": [...], "phones": [...], "emails": [...], "account": ...}
    moved: Mapped[dict[str, Any]] = mapped_column(JSON)


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
    phones: list[str]
    emails: list[str]
    account: str | None
    created_at: datetime
    updated_at: datetime | None
    identities: list[IdentityOut]
    picture: PictureOut | None = None
