"""cases' tables: service cases, created from chats."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from libs.common.db import UTCDateTime, bus_tables
from libs.common.envelope import utcnow
from libs.common.events import MessageView


class Base(DeclarativeBase):
    pass


outbox, inbox = bus_tables(Base.metadata)


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # One case per chat: running "Create case" again answers the same case.
    chat_id: Mapped[str | None] = mapped_column(String(36), unique=True)
    subject: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(50))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    contact_id: Mapped[str | None] = mapped_column(String(36), index=True)
    account_id: Mapped[str | None] = mapped_column(String(36))
    assignee_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MergedContact(Base):
    """A contact merged into another (from `contact.merged`): a case made for it later (the
    chat's contact had not been re-pointed yet) is the survivor's."""

    __tablename__ = "merged_contacts"

    merged_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    survivor_id: Mapped[str] = mapped_column(String(36), index=True)


class CaseFromChatIn(BaseModel):
    chat_id: str
    contact_id: str
    account_id: str | None = None
    agent_id: str | None
    messages: list[MessageView]


class CaseOut(BaseModel):
    id: str
    chat_id: str | None
    subject: str
    description: str
    source: str
    status: str
    registered_at: datetime
    contact_id: str | None
    account_id: str | None
    assignee_id: str | None

    @classmethod
    def of(cls, case: Case) -> CaseOut:
        return cls.model_validate(case, from_attributes=True)
