"""The event catalogue: every event chatdesk publishes, one pydantic model each.

This module is the bus contract between the services and for outside subscribers;
`make events` writes its JSON Schemas to `docs/events/`. Adding a field is compatible;
renaming or removing one needs a new `schema_version`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from libs.common.envelope import Event, new_id, utcnow

Platform = Literal["telegram", "facebook"]
Direction = Literal["in", "out"]
DeliveryStatus = Literal["pending", "sent", "delivered", "read", "failed"]
AgentStatus = Literal["active", "inactive"]
StatusReason = Literal["agent", "login", "logout", "disconnected", "reconnected"]
WithdrawReason = Literal["taken", "transferred", "completed", "agent_unavailable"]
CompletionReason = Literal["inactivity", "max_wait"]
AttachmentState = Literal["pending", "stored", "too_large", "failed"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sender(_Part):
    """Who wrote a message, as the platform describes them."""

    first_name: str | None = None
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None

    @property
    def display_name(self) -> str:
        name = " ".join(p for p in (self.first_name, self.last_name) if p)
        return name or (f"@{self.username}" if self.username else "Unknown customer")


class Attachment(_Part):
    """A file in a message: a customer's (downloaded by ingest after the webhook answered) or an
    agent's (stored when it was uploaded)."""

    id: str = Field(
        default_factory=new_id,
        description="Stable id, given when the message is accepted; the console downloads the "
        "file as `GET /api/files/{id}` once `state` is `stored`.",
    )
    kind: str = Field(description="photo, document, voice, audio, video, sticker, location, ...")
    name: str | None = None
    mime_type: str | None = None
    size: int | None = Field(default=None, description="Bytes, when known.")
    state: AttachmentState = Field(
        default="pending",
        description="pending (not downloaded yet), stored (in chatdesk's blob store), too_large "
        "(over the platform's or chatdesk's size limit: name and size only), failed (see "
        "`error`).",
    )
    error: str | None = Field(default=None, description="Why the file could not be stored.")
    blob_key: str | None = Field(
        default=None, description="The file's key in chatdesk's blob store, once stored."
    )
    platform_file_id: str | None = Field(
        default=None,
        description="Where the platform keeps the file (Telegram's file_id; for Facebook, the "
        "file's URL, which expires). Only in `inbound.received`: it is ingest's business.",
    )


class InboundMessage(Event):
    """A customer's message, verified and normalized by ingest, not yet attributed to a contact."""

    type = "inbound.received"

    channel_id: str
    queue_id: str = Field(description="The queue the channel feeds.")
    platform: Platform
    external_user_id: str = Field(description="The sender's id on the platform.")
    external_chat_id: str = Field(description="Where replies go on the platform.")
    external_message_id: str
    sender: Sender
    text: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    sent_at: datetime = Field(description="When the platform says it was sent (second precision).")
    sequence: int | None = Field(
        default=None,
        description="The platform's number of the message within its chat, where the platform "
        "numbers them in order (Telegram's message_id): orders messages sent in the same second.",
    )
    received_at: datetime = Field(
        default_factory=utcnow, description="When ingest accepted it (arrival order)."
    )


class InboundEdited(Event):
    """A customer edited a message they had sent (Telegram's `edited_message`), verified by
    ingest. chat finds the message by channel, platform chat and platform message id."""

    type = "inbound.edited"

    channel_id: str
    platform: Platform
    external_chat_id: str
    external_message_id: str
    text: str | None = Field(description="The message's new text (or caption).")
    edited_at: datetime = Field(description="When the platform says it was edited.")
    received_at: datetime = Field(default_factory=utcnow, description="When ingest accepted it.")


class InboundResolved(Event):
    """contacts attributed an inbound message to a contact (found or just created)."""

    type = "inbound.resolved"

    contact_id: str
    contact_name: str
    contact_created: bool
    message: InboundMessage


class ContactCreated(Event):
    """A new contact was created from a platform identity that reached us for the first time."""

    type = "contact.created"

    contact_id: str
    name: str
    platform: Platform
    external_user_id: str
    channel_id: str


class DuplicateCandidate(_Part):
    """A contact that may be the same person as the searched one."""

    contact_id: str
    name: str
    score: float = Field(description="0-100: how strongly the rule matched (100 for exact rules).")
    rule_id: str = Field(description="The duplicate rule that matched best.")
    rule_name: str


class DuplicatesFound(Event):
    """contacts' duplicate search for a new chat's contact, under the active duplicate rules.

    Emitted when the search is done, and again whenever the chat is offered to an agent after
    that, naming the agent, so that the count reaches the console of whoever holds the chat. A
    search and an offer handled together give one event, naming the agent.
    """

    type = "contact.duplicates_found"

    contact_id: str
    chat_id: str
    agent_id: str | None = Field(description="The agent holding the chat, if it is offered yet.")
    count: int = Field(description="How many contacts matched a rule.")
    candidates: list[DuplicateCandidate] = Field(
        description="The best matches first; at most 50 of them."
    )
    searched_at: datetime


class ContactUpdated(Event):
    """A contact's details changed: edited by an agent, or filled in by a merge."""

    type = "contact.updated"

    contact_id: str
    name: str
    phones: list[str]
    emails: list[str]
    account: str | None
    updated_by: str | None = Field(description="Agent id.")


class MovedIdentity(_Part):
    platform: Platform
    external_user_id: str
    channel_id: str


class ContactMerged(Event):
    """Contacts were merged into a surviving contact: their identities, chats and cases now
    belong to it, and their ids answer 410 with the survivor's."""

    type = "contact.merged"

    merge_id: str
    survivor_id: str
    survivor_name: str
    merged_ids: list[str]
    identities: list[MovedIdentity] = Field(description="The identities moved to the survivor.")
    merged_by: str | None = Field(description="Agent id.")
    merged_at: datetime


class MessageView(_Part):
    """A chat message as the console and subscribers see it."""

    id: str
    chat_id: str
    direction: Direction
    text: str | None
    attachments: list[Attachment] = Field(default_factory=list)
    created_at: datetime
    author_agent_id: str | None = None
    sent_at: datetime | None = Field(
        default=None,
        description="When the customer sent it, as the platform says (incoming messages). A "
        "chat's messages are listed in the platform's order, whatever order they arrived in.",
    )
    sequence: int | None = Field(
        default=None,
        description="The platform's number of an incoming message within its chat, where the "
        "platform numbers them (Telegram's message_id): orders messages sent in the same second.",
    )
    edited_at: datetime | None = Field(
        default=None, description="When the customer last edited it, if they did."
    )
    delivery_status: DeliveryStatus | None = Field(
        default=None, description="For outgoing messages: how far delivery has got."
    )
    delivery_error: str | None = None


class ChatOpened(Event):
    """A new chat was opened by a customer message (no active chat on that channel)."""

    type = "chat.opened"

    chat_id: str
    contact_id: str
    channel_id: str
    queue_id: str
    platform: Platform
    opened_at: datetime


class ChatMessageReceived(Event):
    """A customer message was added to a chat."""

    type = "chat.message_received"

    chat_id: str
    agent_id: str | None = Field(description="The agent holding the chat (offered or owner).")
    message: MessageView


class ChatCustomerWaiting(Event):
    """A customer wrote to a chat that had no unanswered message: they wait for an answer from
    now on. Said once per wait (a chat's first wait starts with `chat.opened`); the owner's
    reply (`chat.reply_posted`) ends it."""

    type = "chat.customer_waiting"

    chat_id: str
    agent_id: str | None = Field(description="The agent holding the chat (offered or owner).")
    since: datetime = Field(description="When chatdesk got the first unanswered message.")


class ChatMessageEdited(Event):
    """A customer edited a message of a chat: the message as it reads now."""

    type = "chat.message_edited"

    chat_id: str
    agent_id: str | None = Field(description="The agent holding the chat (offered or owner).")
    message: MessageView


class ChatReplyPosted(Event):
    """An agent posted a reply; ingest delivers it to the platform."""

    type = "chat.reply_posted"

    chat_id: str
    agent_id: str
    channel_id: str
    platform: Platform
    external_chat_id: str
    message: MessageView


class ChatMessageStatusChanged(Event):
    """The delivery status of an outgoing message changed."""

    type = "chat.message_status_changed"

    chat_id: str
    agent_id: str | None
    message: MessageView


class ChatQueued(Event):
    """A chat waits in a queue for an available agent."""

    type = "chat.queued"

    chat_id: str
    queue_id: str


class ChatOffered(Event):
    """A chat was offered to an agent; it shows in that agent's New list until it is accepted,
    expires or is withdrawn. Under the queue's "everyone" rule, one such event goes to each
    agent offered the chat at once."""

    type = "chat.offered"

    chat_id: str
    queue_id: str
    agent_id: str
    contact_id: str
    offered_at: datetime
    expires_at: datetime | None = Field(
        default=None, description="When the offer lapses unless accepted (the accept limit)."
    )


class ChatOfferExpired(Event):
    """An agent let an offer lapse (the queue's accept time limit): the chat leaves their New
    list and is offered to the next available agent, never straight back to them."""

    type = "chat.offer_expired"

    chat_id: str
    queue_id: str
    agent_id: str
    expired_at: datetime


class ChatOfferWithdrawn(Event):
    """An offer ended before it was accepted or expired: another agent took the chat (the
    "everyone" rule), it was transferred or completed, or the agent stopped being available."""

    type = "chat.offer_withdrawn"

    chat_id: str
    queue_id: str
    agent_id: str
    reason: WithdrawReason
    withdrawn_at: datetime


class ChatAccepted(Event):
    """An agent accepted a chat and became its owner."""

    type = "chat.accepted"

    chat_id: str
    queue_id: str
    agent_id: str
    accepted_at: datetime


class ChatReplyOverdue(Event):
    """The customer of an accepted chat has waited longer than the queue's reply time limit for
    an answer. If the queue says so, the chat is taken from its owner and offered again
    (`reoffered`)."""

    type = "chat.reply_overdue"

    chat_id: str
    queue_id: str
    agent_id: str = Field(description="The owner who did not answer in time.")
    waiting_since: datetime = Field(description="The customer's first unanswered message.")
    reoffered: bool


class ChatTransferred(Event):
    """A chat moved to another agent (who owns it at once) or to a queue (where it waits for an
    offer), by its owner, a supervisor, or routing itself (`by` null: the queue's maximum
    waiting time)."""

    type = "chat.transferred"

    chat_id: str
    from_agent_id: str | None
    from_queue_id: str
    to_agent_id: str | None = Field(description="The new owner; null when moved to a queue.")
    to_queue_id: str
    by: str | None = Field(description="Agent id, or null when routing moved it.")
    transferred_at: datetime


class ChatCompletionDue(Event):
    """Routing decided a chat is over without its owner (the customer went quiet for the
    queue's inactivity limit, or it waited past the queue's maximum waiting time); chat
    completes it and publishes `chat.completed`."""

    type = "chat.completion_due"

    chat_id: str
    reason: CompletionReason
    due_at: datetime


class ChatCompleted(Event):
    """A chat was completed; the customer's next message opens a new chat."""

    type = "chat.completed"

    chat_id: str
    agent_id: str | None
    completed_by: str | None = Field(description="Agent id, or null when completed by the system.")
    completed_at: datetime


class DeliveryUpdated(Event):
    """ingest's report on delivering an outgoing message to the platform."""

    type = "message.delivery_updated"

    message_id: str
    chat_id: str
    status: DeliveryStatus
    platform_message_id: str | None = None
    error: str | None = Field(default=None, description="Human-readable reason when failed.")


class AttachmentFetched(Event):
    """ingest downloaded a customer's file into the blob store, or gave up on it (too large,
    failed)."""

    type = "inbound.attachment_fetched"

    channel_id: str
    attachment: Attachment = Field(description="With its final `state` (and `blob_key`).")


class PictureFetched(Event):
    """ingest stored a new contact's profile picture (from the platform) in the blob store."""

    type = "profile.picture_fetched"

    contact_id: str
    channel_id: str
    blob_key: str
    content_type: str
    size: int


class ChatMessageUpdated(Event):
    """A message changed after it was posted: one of its files was stored, or could not be."""

    type = "chat.message_updated"

    chat_id: str
    agent_id: str | None = Field(description="The agent holding the chat (offered or owner).")
    message: MessageView


class IdentityUnreachable(Event):
    """The platform refused a message because the customer cannot receive messages from this
    channel (they blocked the bot, or deleted their account). contacts flags the identity until
    the customer writes again."""

    type = "identity.unreachable"

    channel_id: str
    platform: Platform
    external_user_id: str
    reason: str = Field(description="Human-readable, as the agent was told.")
    detected_at: datetime


class AgentStatusChanged(Event):
    """An agent's status changed: by the agent, by login or logout, or because every console
    of theirs was gone longer than the disconnect grace period (`disconnected`; the status
    comes back when a console does, `reconnected`)."""

    type = "agent.status_changed"

    agent_id: str
    status: AgentStatus
    previous: AgentStatus
    reason: StatusReason = "agent"
