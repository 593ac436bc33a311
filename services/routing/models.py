"""routing's tables (queues and their members, agents' status, where each chat stands, open
offers) and its API schemas.

The timers live in these rows as due times (`Offer.expires_at`, `Assignment.reply_due_at`,
`.complete_due_at`, `.wait_due_at`, `Agent.console_seen_at`), so they survive restarts and any
replica's clock (clock.py) can fire them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from libs.common.db import UTCDateTime, bus_tables
from libs.common.envelope import utcnow
from libs.common.events import AgentStatus

RoutingRule = Literal["least_busy", "round_robin", "everyone"]
OnMaxWait = Literal["complete", "move"]
State = Literal["queued", "offered", "assigned", "closed"]


class Base(DeclarativeBase):
    pass


outbox, inbox = bus_tables(Base.metadata)


class Queue(Base):
    __tablename__ = "queues"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    routing_rule: Mapped[str] = mapped_column(String(20), default="least_busy")
    capacity: Mapped[int] = mapped_column(default=5)
    accept_timeout_s: Mapped[int]
    reply_timeout_s: Mapped[int]
    reoffer_overdue: Mapped[bool] = mapped_column(default=False)
    auto_complete_after_s: Mapped[int | None]
    max_wait_s: Mapped[int | None]
    on_max_wait: Mapped[str | None] = mapped_column(String(20))
    overflow_queue_id: Mapped[str | None] = mapped_column(String(36))
    # Round robin: the member offered a chat last; the next offer goes to the one after.
    last_offered_agent_id: Mapped[str | None] = mapped_column(String(36))
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
    # The last sign of a console open (gateways report them); null when no console is being
    # watched, so an agent working through the API alone is never timed out.
    console_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # Set when the consoles were gone past the grace period: their return is a login.
    disconnected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Assignment(Base):
    """Where a chat stands in routing: queued -> offered -> assigned -> closed.

    Each chat's queue row is the lock for changing it (see service.py).
    """

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
    agent_id: Mapped[str | None] = mapped_column(String(36), doc="The owner, once accepted.")
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    offered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Never offered straight back to the agent who let it lapse or lost it.
    passed_over_agent_id: Mapped[str | None] = mapped_column(String(36))
    # The customer's first message since the last answer; null when nothing waits for one.
    awaiting_reply_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reply_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    complete_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    wait_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class Offer(Base):
    """A chat offered to an agent, until accepted, expired or withdrawn. One per chat, except
    under the "everyone" rule."""

    __tablename__ = "offers"

    chat_id: Mapped[str] = mapped_column(ForeignKey("assignments.chat_id"), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(36), primary_key=True, index=True)
    queue_id: Mapped[str] = mapped_column(String(36))
    offered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Null under the "everyone" rule: that offer stands until someone accepts.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class QueueSettings(BaseModel):
    """A queue's options: what an admin sets, and what `PATCH` changes."""

    model_config = ConfigDict(extra="forbid")

    routing_rule: RoutingRule = Field(
        default="least_busy",
        description="least_busy: the agent with the fewest open chats, then the longest since "
        "they last accepted one; round_robin: members in turn; everyone: offered to every "
        "available member at once, the first to accept wins.",
    )
    capacity: int = Field(default=5, ge=1, le=100, description="Max open chats per agent.")
    accept_timeout_s: int = Field(
        default=60, ge=5, le=86_400, description="An offer not accepted by then moves on."
    )
    reply_timeout_s: int = Field(
        default=300,
        ge=5,
        le=7 * 86_400,
        description="A customer waiting longer for an answer raises chat.reply_overdue.",
    )
    reoffer_overdue: bool = Field(
        default=False, description="Take an overdue chat from its owner and offer it again."
    )
    auto_complete_after_s: int | None = Field(
        default=None,
        ge=5,
        le=30 * 86_400,
        description="Complete a chat whose customer stays silent this long after an answer.",
    )
    max_wait_s: int | None = Field(
        default=None,
        ge=5,
        le=30 * 86_400,
        description="Longest a chat may wait for an agent to accept it; then `on_max_wait`.",
    )
    on_max_wait: OnMaxWait | None = Field(
        default=None,
        description="complete: end the chat; move: transfer it to `overflow_queue_id`.",
    )
    overflow_queue_id: str | None = None

    @model_validator(mode="after")
    def _max_wait_complete(self) -> Self:
        if (self.max_wait_s is None) != (self.on_max_wait is None):
            raise ValueError("set max_wait_s and on_max_wait together")
        if (self.on_max_wait == "move") != (self.overflow_queue_id is not None):
            raise ValueError('overflow_queue_id is needed with on_max_wait "move", and only then')
        return self


class QueueIn(QueueSettings):
    name: str = Field(min_length=1, max_length=200)
    agent_ids: list[str] = Field(default_factory=list, description="The queue's members.")


class QueuePatch(BaseModel):
    """Any of a queue's fields; the result is checked as a whole."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    agent_ids: list[str] | None = None
    routing_rule: RoutingRule | None = None
    capacity: int | None = None
    accept_timeout_s: int | None = None
    reply_timeout_s: int | None = None
    reoffer_overdue: bool | None = None
    auto_complete_after_s: int | None = None
    max_wait_s: int | None = None
    on_max_wait: OnMaxWait | None = None
    overflow_queue_id: str | None = None


class QueueOut(QueueIn):
    model_config = ConfigDict(extra="ignore")

    id: str


class AgentOut(BaseModel):
    id: str
    status: AgentStatus


class StatusIn(BaseModel):
    status: AgentStatus


class AcceptIn(BaseModel):
    agent_id: str


class TransferIn(BaseModel):
    """Where a chat goes: to an agent (who owns it at once) or to a queue (to be offered)."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field(description="The agent asking (the owner or a supervisor).")
    agent_id: str | None = None
    queue_id: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.agent_id is None) == (self.queue_id is None):
            raise ValueError("give either agent_id or queue_id")
        return self


class PresenceIn(BaseModel):
    agent_ids: list[str] = Field(description="Agents with a console open on this gateway.")


class AssignmentOut(BaseModel):
    chat_id: str
    queue_id: str
    state: State
    agent_id: str | None = Field(description="The owner, once accepted.")
    offered_to: list[str] = Field(description="Agents the chat is offered to right now.")
    queued_at: datetime
    offered_at: datetime | None
    offer_expires_at: datetime | None = Field(description="For the asking agent's offer.")
    accepted_at: datetime | None
    awaiting_reply_since: datetime | None
    reply_due_at: datetime | None
