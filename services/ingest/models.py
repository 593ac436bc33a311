"""ingest's tables: channels (with their secrets), inbound dedup keys, outbound deliveries,
the platform-side state of each conversation (threads), files waiting to be downloaded, and
which replica looks after each Telegram channel's link to Telegram (telegram_links)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import JSON, BigInteger, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from libs.common.db import UTCDateTime, bus_tables
from libs.common.envelope import utcnow


class Base(DeclarativeBase):
    pass


outbox, inbox = bus_tables(Base.metadata)


class Channel(Base):
    __tablename__ = "channels"
    # Meta posts every page of an app to one webhook: a page must name one channel.
    __table_args__ = (UniqueConstraint("kind", "external_id", name="one_channel_per_account"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    queue_id: Mapped[str] = mapped_column(String(36))
    api_base: Mapped[str] = mapped_column(String(500))
    # The channel's own account on its platform: the Facebook page id, the Telegram bot's id
    # (one channel per account: two channels of one bot would take each other's updates).
    external_id: Mapped[str | None] = mapped_column(String(100))
    # Its name there, for people: the bot's @username.
    external_name: Mapped[str | None] = mapped_column(String(200))
    # Secrets: never returned by the API, never put in events or logs.
    # `token` calls the platform (bot token, page access token); `secret` checks its webhooks
    # (Telegram's secret token, the Meta app secret); `verify_token` answers Meta's handshake.
    token: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)
    verify_token: Mapped[str | None] = mapped_column(Text)
    # Facebook: replies outside the 24-hour window may go out tagged HUMAN_AGENT (7 days).
    human_agent_tag: Mapped[bool] = mapped_column(default=False)
    # Health of the link, as the platform last answered: ok, token_invalid, webhook_failing
    # (Telegram could not take or use our webhook); `status_reason` says why, without secrets.
    status: Mapped[str] = mapped_column(String(20), default="ok")
    status_reason: Mapped[str | None] = mapped_column(Text)
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
    # Receipts name a conversation and a time ("all sent before this were read").
    __table_args__ = (Index("deliveries_by_thread", "channel_id", "external_chat_id"),)

    message_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    chat_id: Mapped[str] = mapped_column(String(36))
    channel_id: Mapped[str] = mapped_column(String(36))
    external_chat_id: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20))
    # The platform's id of the message (of its last part, when it was sent in parts).
    platform_message_id: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Thread(Base):
    """One customer's conversation with a channel, as the platform sees it.

    When the customer last wrote decides which messaging window a reply falls in (Facebook);
    the receipt watermarks say how far our messages got. They are kept here, not only applied to
    deliveries, because a receipt can overtake the recording of the send it covers.
    """

    __tablename__ = "threads"

    channel_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    external_chat_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_inbound_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    read_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Fetch(Base):
    """A file to download from a platform: a customer's attachment, or a new contact's picture.

    A row is a job, written with what asked for it (the webhook's commit, the contact's event).
    A worker takes it with a lease (`lease_id`, `due_at` pushed past the longest download) and
    deletes it in the transaction that records the result; a lease that runs out (its worker
    died) makes it anyone's again.
    """

    __tablename__ = "fetches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the attachment or contact
    kind: Mapped[str] = mapped_column(String(20))  # attachment, picture
    channel_id: Mapped[str] = mapped_column(String(36))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(default=0)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    lease_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TelegramLink(Base):
    """Which ingest process looks after a Telegram channel's link (long polling, or watching the
    webhook), until when; and where polling got to.

    A process holds a channel while it renews `leased_until`; when it stops renewing (it died),
    any other replica takes the channel over. `next_update_id` is the getUpdates offset:
    updates below it are committed and confirmed to Telegram.
    """

    __tablename__ = "telegram_links"

    channel_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200))
    leased_until: Mapped[datetime] = mapped_column(UTCDateTime)
    next_update_id: Mapped[int | None] = mapped_column(BigInteger)


TELEGRAM_TOKEN_PATTERN = r"^\d+:[A-Za-z0-9_-]+$"
TELEGRAM_SECRET_PATTERN = r"^[A-Za-z0-9_-]{1,256}$"
META_APP_SECRET_PATTERN = r"^[A-Za-z0-9]{1,200}$"


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


class FacebookChannelIn(BaseModel):
    kind: Literal["facebook"]
    name: str = Field(min_length=1, max_length=200)
    queue_id: str = Field(min_length=1, max_length=36)
    page_id: str = Field(pattern=r"^\d{1,30}$", description="The Facebook page's numeric id.")
    page_token: str = Field(
        min_length=1, max_length=1000, description="A page access token with pages_messaging."
    )
    app_secret: str = Field(
        pattern=META_APP_SECRET_PATTERN,
        description="The Meta app's secret: webhooks are signed with it (X-Hub-Signature-256).",
    )
    verify_token: str = Field(
        min_length=1,
        max_length=200,
        description="Any string; Meta's webhook setup sends it back as hub.verify_token.",
    )
    human_agent_tag: bool = Field(
        default=False,
        description="Send replies the 24-hour window refuses again tagged HUMAN_AGENT (up to 7 "
        "days after the customer's last message). Needs Meta's Human Agent permission.",
    )
    api_base: str | None = Field(default=None, pattern=r"^https?://", max_length=500)


ChannelIn = Annotated[TelegramChannelIn | FacebookChannelIn, Field(discriminator="kind")]


class ChannelPatch(BaseModel):
    """New values for some of a channel's settings: a rotated token or secret, above all."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    token: str | None = Field(default=None, pattern=TELEGRAM_TOKEN_PATTERN)
    secret: str | None = Field(default=None, pattern=TELEGRAM_SECRET_PATTERN)
    page_token: str | None = Field(default=None, min_length=1, max_length=1000)
    app_secret: str | None = Field(default=None, pattern=META_APP_SECRET_PATTERN)
    verify_token: str | None = Field(default=None, min_length=1, max_length=200)
    human_agent_tag: bool | None = None
    active: bool | None = Field(
        default=None,
        description="false stops taking messages and sending replies (the webhook answers 410); "
        "true takes them again. A channel with chats is deactivated rather than deleted.",
    )

    def fields(self) -> set[str]:
        return {name for name, value in self if value is not None}


# The settings of each kind that a patch may change.
PATCHABLE = {
    "telegram": {"name", "token", "secret", "active"},
    "facebook": {"name", "page_token", "app_secret", "verify_token", "human_agent_tag", "active"},
}


class ChannelOut(BaseModel):
    """A channel as the API shows it: no token, no secret."""

    id: str
    kind: str
    name: str
    queue_id: str
    api_base: str
    page_id: str | None = Field(description="Facebook: the page the channel answers for.")
    bot_id: str | None = Field(description="Telegram: the bot's id, from getMe.")
    bot_username: str | None = Field(description="Telegram: the bot's @username.")
    human_agent_tag: bool
    status: str = Field(
        description="ok; token_invalid once the platform refused the channel's token (replies "
        "fail until the token is replaced); webhook_failing when Telegram refused our webhook "
        "or cannot deliver to it."
    )
    status_reason: str | None = Field(description="Why the status is not ok.")
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
            page_id=channel.external_id if channel.kind == "facebook" else None,
            bot_id=channel.external_id if channel.kind == "telegram" else None,
            bot_username=channel.external_name if channel.kind == "telegram" else None,
            human_agent_tag=channel.human_agent_tag,
            status=channel.status,
            status_reason=channel.status_reason,
            active=channel.active,
            created_at=channel.created_at,
            webhook_path=f"/webhooks/{channel.kind}/{channel.id}",
        )
