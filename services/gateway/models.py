"""gateway's tables: agent accounts, their access tokens, and each agent's event log."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from libs.common.db import UTCDateTime, bus_tables
from libs.common.envelope import utcnow
from libs.common.events import AgentStatus

Role = Literal["agent", "supervisor"]


class Base(DeclarativeBase):
    pass


outbox, inbox = bus_tables(Base.metadata)


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    display_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A deactivated agent cannot log in; their records keep naming them.
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())


class AccessToken(Base):
    """A login session. Only the token's SHA-256 is stored."""

    __tablename__ = "access_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AgentEvent(Base):
    """What the console of one agent is told, in order; `id` is what clients resume after."""

    __tablename__ = "agent_events"
    # (agent, id): an agent's newest row and the rows after a cursor are index range reads.
    __table_args__ = (
        UniqueConstraint("source_event_id", "agent_id"),
        Index("ix_agent_events_agent_id_id", "agent_id", "id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    agent_id: Mapped[str] = mapped_column(String(36))
    type: Mapped[str] = mapped_column(String(100))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    source_event_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChatHolder(Base):
    """Who holds each open chat (the agents it is offered to, or its owner), from routing's
    events.

    Fan-out only: chat's events reach whoever holds the chat now, including a customer message
    chat published before it heard of the offer. Routing remains the authority.
    """

    __tablename__ = "chat_holders"

    chat_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(36), primary_key=True)


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)


class AgentIn(BaseModel):
    username: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: str = Field(min_length=8, max_length=1000)
    display_name: str = Field(min_length=1, max_length=200)
    role: Role = "agent"


class AgentPatch(BaseModel):
    """New settings for an agent, each optional. `active: false` deactivates the account: its
    sessions end, it goes inactive, and it cannot log in until activated again."""

    model_config = ConfigDict(extra="forbid")

    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    role: Role | None = None
    password: str | None = Field(default=None, min_length=8, max_length=1000)
    active: bool | None = None


class AgentOut(BaseModel):
    id: str
    username: str
    display_name: str
    role: Role
    active: bool = True


class MeOut(AgentOut):
    status: AgentStatus


class LoginOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    agent: MeOut


class StatusIn(BaseModel):
    status: AgentStatus


class TextMessageIn(BaseModel):
    text: str = Field(min_length=1, max_length=20_000)


class ChatView(BaseModel):
    """A chat as the console sees it: chat's record with routing's word on who holds it."""

    id: str
    status: Literal["new", "active", "completed"]
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
    offered_at: datetime | None = None
    offer_expires_at: datetime | None = Field(
        default=None, description="When the asking agent's offer lapses unless accepted."
    )
    awaiting_reply_since: datetime | None = Field(
        default=None, description="The customer's first message still waiting for an answer."
    )
    reply_due_at: datetime | None = Field(
        default=None, description="When the owner's answer is due (the reply time limit)."
    )


class ChannelSummary(BaseModel):
    """A channel as every agent sees it: where a chat came from (no settings, no secrets)."""

    id: str
    kind: str
    name: str
    active: bool


class ChatAction(BaseModel):
    code: str
    title: str
