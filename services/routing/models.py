"""routing's tables: queues and their members, agents' status, and chat assignments."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from libs.common.db import UTCDateTime, bus_tables
from libs.common.envelope import utcnow
from libs.common.events import AgentStatus


class Base(DeclarativeBase):
    pass


outbox, inbox = bus_tables(Base.metadata)


class Queue(Base):
    __tablename__ = "queues"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    accept_timeout_s: Mapped[int]
    reply_timeout_s: Mapped[int]
    capacity: Mapped[int] = mapped_column(default=5)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class QueueMember(Base):
    __tablename__ = "queue_members"

    queue_id: Mapped[str] = mapped_column(ForeignKey("queues.id"), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(36), primary_key=True, index=True)


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default="inactive")
    # The status to restore at the next login (logout sets the agent inactive).
    status_before_logout: Mapped[str | None] = mapped_column(String(20))
    last_accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Assignment(Base):
    """Where a chat stands in routing: queued -> offered -> assigned -> closed."""

    __tablename__ = "assignments"
    __table_args__ = (
        Index("assignments_queue_state", "queue_id", "state", "queued_at"),
        Index("assignments_agent_state", "agent_id", "state"),
        # Whether routing ever gave an agent one of a contact's chats (who may read it), and
        # re-pointing a merged contact's chats.
        Index("assignments_contact_agent", "contact_id", "agent_id"),
    )

    chat_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    queue_id: Mapped[str] = mapped_column(String(36))
    contact_id: Mapped[str] = mapped_column(String(36))
    state: Mapped[str] = mapped_column(String(20))
    agent_id: Mapped[str | None] = mapped_column(String(36))
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    offered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class QueueIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    agent_ids: list[str] = Field(default_factory=list)
    accept_timeout_s: int = Field(default=60, ge=5, le=86_400)
    reply_timeout_s: int = Field(default=300, ge=5, le=7 * 86_400)
    capacity: int = Field(default=5, ge=1, le=100, description="Max simultaneous chats per agent.")


class QueueOut(BaseModel):
    id: str
    name: str
    agent_ids: list[str]
    accept_timeout_s: int
    reply_timeout_s: int
    capacity: int


class AgentOut(BaseModel):
    id: str
    status: AgentStatus


class StatusIn(BaseModel):
    status: AgentStatus


class AcceptIn(BaseModel):
    agent_id: str


class AssignmentOut(BaseModel):
    chat_id: str
    queue_id: str
    state: Literal["queued", "offered", "assigned", "closed"]
    agent_id: str | None
    queued_at: datetime
    offered_at: datetime | None
    accepted_at: datetime | None

    @classmethod
    def of(cls, a: Assignment) -> AssignmentOut:
        return cls.model_validate(a, from_attributes=True)
