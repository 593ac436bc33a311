"""chat's operations: threading customer messages, replies, their files, the chat lifecycle."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Insert, Select, Table, bindparam, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import (
    UTCDateTime,
    advisory_locks,
    any_key_of,
    any_of,
    batch_insert,
    dialect_insert,
    emit,
    insert_ignore,
    key_values,
    on_postgres,
)
from libs.common.driver import DriverTx
from libs.common.envelope import new_id, utcnow
from libs.common.events import (
    Attachment,
    AttachmentFetched,
    ChatAccepted,
    ChatCompleted,
    ChatCompletionDue,
    ChatCustomerWaiting,
    ChatMessageReceived,
    ChatMessageStatusChanged,
    ChatMessageUpdated,
    ChatOffered,
    ChatOpened,
    ChatReplyOverdue,
    ChatReplyPosted,
    ChatTransferred,
    ContactMerged,
    ContactUpdated,
    DeliveryUpdated,
    InboundResolved,
    MessageView,
)
from services.chat.models import Chat, MergedContact, Message, MessageFile, ReplyFile
from services.chat.ordering import conversation_order

PREVIEW = 200


class ChatClosed(Exception):
    """The chat is completed: nothing more can be posted to it."""


CHATS = cast(Table, Chat.__table__)
CONVERSATION = (CHATS.c.contact_id, CHATS.c.channel_id, CHATS.c.external_chat_id)
MESSAGES = cast(Table, Message.__table__)
FILES = cast(Table, MessageFile.__table__)
MERGED = cast(Table, MergedContact.__table__)
# The advisory locks' namespace ("mrg") for contacts: a merge takes its merged contacts'
# exclusively, threading takes its messages' contacts' shared. Either the merge waits for the
# threading to commit, and then moves the chats it opened too; or the threading waits for the
# merge, and then finds the merged contacts' survivors.
MERGES = 0x6D7267


Conversation = tuple[str, str, str]  # (contact, channel, the customer's chat on it)


def _conversation(resolved: InboundResolved) -> Conversation:
    return (resolved.contact_id, resolved.message.channel_id, resolved.message.external_chat_id)


class OpenChat(NamedTuple):
    id: str
    agent_id: str | None
    awaiting_reply_since: datetime | None


@functools.cache
def _open_chats_of(postgres: bool) -> Select[Any]:
    return (
        select(CHATS.c.id, CHATS.c.agent_id, CHATS.c.awaiting_reply_since, *CONVERSATION)
        .where(any_key_of(postgres, CONVERSATION, "conversation"), CHATS.c.status != "completed")
        .order_by(CHATS.c.id)
        .with_for_update()
    )


async def _open_chats(tx: DriverTx, keys: set[Conversation]) -> dict[Conversation, OpenChat]:
    """The open chat of each conversation that has one, locked until the transaction ends (in
    id order, so that batches never wait on each other in a circle): whether its customer was
    already waiting for a reply stays true until this batch's messages are in."""
    rows = await tx.fetch(_open_chats_of(tx.postgres), key_values("conversation", keys))
    found: dict[Conversation, OpenChat] = {}
    for id, agent_id, awaiting_reply_since, *conversation in rows:
        key = cast(Conversation, tuple(conversation))
        # Only the conversations asked for: the lookup also matches other combinations of parts.
        if key in keys:
            found[key] = OpenChat(id, agent_id, awaiting_reply_since)
    return found


@functools.cache
def _survivors_of(postgres: bool) -> Select[Any]:
    return select(MERGED.c.merged_id, MERGED.c.survivor_id, MERGED.c.survivor_name).where(
        any_of(postgres, MERGED.c.merged_id, "contacts")
    )


async def _to_survivors(
    tx: DriverTx, batch: Sequence[InboundResolved]
) -> Sequence[InboundResolved]:
    """The batch with messages attributed to since-merged contacts given to their survivors.

    The contacts are held against merges until the transaction ends (`MERGES`); SQLite needs
    no lock, having one writer at a time."""
    contacts = sorted({r.contact_id for r in batch})
    if tx.postgres:
        await tx.fetch(advisory_locks(shared=True), {"namespace": MERGES, "keys": contacts})
    rows = await tx.fetch(_survivors_of(tx.postgres), {"contacts": contacts})
    merged = {merged_id: (survivor_id, name) for merged_id, survivor_id, name in rows}
    if not merged:
        return batch
    return [
        r.model_copy(
            update={
                "contact_id": merged[r.contact_id][0],
                "contact_name": merged[r.contact_id][1],
            }
        )
        if r.contact_id in merged
        else r
        for r in batch
    ]


async def thread_inbound(tx: DriverTx, batch: Sequence[InboundResolved]) -> None:
    """Append each message to its contact's open chat of that conversation (the channel and
    the customer's chat on it), or open a new chat.

    A batch costs a handful of statements whatever its size, on the database driver (decision
    19): this runs for every customer message. Messages of one customer within a batch go to
    one chat, in arrival order.
    """
    batch = await _to_survivors(tx, batch)
    keys = {_conversation(r) for r in batch}
    chats = await _open_chats(tx, keys)
    latest = {_conversation(r): r for r in batch}  # last one wins
    earliest = {_conversation(r): r for r in reversed(batch)}  # first one wins
    opened: dict[Conversation, ChatOpened] = {}
    for first in batch:  # a customer's first message in the batch opens their chat
        key = _conversation(first)
        if key not in chats and key not in opened:
            opened[key] = ChatOpened(
                chat_id=new_id(),
                contact_id=first.contact_id,
                channel_id=first.message.channel_id,
                queue_id=first.message.queue_id,
                platform=first.message.platform,
                opened_at=first.message.received_at,
            )
    if opened:
        inserted = await tx.fetch(
            *batch_insert(
                tx.postgres,
                CHATS,
                [
                    {
                        "id": o.chat_id,
                        "contact_id": o.contact_id,
                        "contact_name": latest[key].contact_name,
                        "channel_id": o.channel_id,
                        "queue_id": o.queue_id,
                        "platform": o.platform,
                        "external_chat_id": latest[key].message.external_chat_id,
                        "status": "new",
                        "opened_at": o.opened_at,
                        "awaiting_reply_since": o.opened_at,
                        "last_message_at": latest[key].message.received_at,
                        "last_message_preview": _preview(latest[key]),
                    }
                    for key, o in opened.items()
                ],
                CHATS.c.id,
                ignore_conflicts=True,
            )
        )
        claimed = {row[0] for row in inserted}
        lost = {key for key, o in opened.items() if o.chat_id not in claimed}
        if lost:
            # Another replica opened these chats at the same moment: join them.
            chats |= await _open_chats(tx, lost)
            opened = {key: o for key, o in opened.items() if key not in lost}
        for o in opened.values():
            tx.emit(o, subject=o.chat_id)

    views: list[tuple[MessageView, str | None, InboundResolved]] = []
    files: list[dict[str, Any]] = []
    for resolved in batch:
        key = _conversation(resolved)
        if key in opened:
            chat_id, agent_id = opened[key].chat_id, None
        else:
            chat_id, agent_id, _ = chats[key]
        inbound = resolved.message
        view = MessageView(
            id=new_id(),
            chat_id=chat_id,
            direction="in",
            text=inbound.text,
            attachments=[
                a.model_copy(update={"platform_file_id": None}) for a in inbound.attachments
            ],
            created_at=inbound.received_at,
            sent_at=inbound.sent_at,
            sequence=inbound.sequence,
        )
        views.append((view, agent_id, resolved))
        files.extend(
            _file_row(a, view.id, chat_id, position) for position, a in enumerate(view.attachments)
        )
    await tx.fetch(
        *batch_insert(
            tx.postgres,
            MESSAGES,
            [
                {
                    "id": view.id,
                    "chat_id": view.chat_id,
                    "direction": "in",
                    "text": view.text,
                    "created_at": view.created_at,
                    "external_message_id": resolved.message.external_message_id,
                    "sent_at": view.sent_at,
                    "sequence": view.sequence,
                }
                for view, _, resolved in views
            ],
        )
    )
    if files:
        known = await _save_inbound_files(tx, files)
        views = [
            (v.model_copy(update={"attachments": [known[a.id] for a in v.attachments]}), a, x)
            for v, a, x in views
        ]
    continued = [key for key in latest if key not in opened]
    if continued:
        await tx.execute_many(
            _CONTINUE,
            [
                {
                    "chat_id": chats[key].id,
                    "at": latest[key].message.received_at,
                    "preview": _preview(latest[key]),
                    "first": earliest[key].message.received_at,
                }
                for key in continued
            ],
        )
    for view, agent_id, _ in views:
        tx.emit(
            ChatMessageReceived(chat_id=view.chat_id, agent_id=agent_id, message=view),
            subject=view.chat_id,
        )
    for key in continued:
        chat = chats[key]
        if chat.awaiting_reply_since is None:  # answered until now: a new wait starts
            waiting = ChatCustomerWaiting(
                chat_id=chat.id, agent_id=chat.agent_id, since=earliest[key].message.received_at
            )
            tx.emit(waiting, subject=chat.id)


_AT = bindparam("at", type_=UTCDateTime)
_CONTINUE = (
    update(CHATS)
    .where(CHATS.c.id == bindparam("chat_id"))
    .values(
        last_message_at=case((CHATS.c.last_message_at < _AT, _AT), else_=CHATS.c.last_message_at),
        last_message_preview=bindparam("preview"),
        awaiting_reply_since=func.coalesce(
            CHATS.c.awaiting_reply_since, bindparam("first", type_=UTCDateTime)
        ),
    )
)


def _preview(resolved: InboundResolved) -> str:
    return preview(resolved.message.text, resolved.message.attachments)


def preview(text: str | None, attachments: Sequence[Attachment]) -> str:
    """What a chat list shows of its last message: its text, else what its first file is."""
    if text:
        return text[:PREVIEW]
    if attachments:
        first = attachments[0]
        return f"[{first.kind}] {first.name or ''}".strip()[:PREVIEW]
    return ""


def _file_row(
    attachment: Attachment, message_id: str | None, chat_id: str | None, position: int
) -> dict[str, Any]:
    return {
        "id": attachment.id,
        "message_id": message_id,
        "chat_id": chat_id,
        "position": position,
        "kind": attachment.kind,
        "name": attachment.name,
        "mime_type": attachment.mime_type,
        "size": attachment.size,
        "state": attachment.state,
        "error": attachment.error,
        "blob_key": attachment.blob_key,
    }


@functools.cache
def _save_file(postgres: bool) -> Insert:
    upsert = dialect_insert(postgres, FILES)
    return upsert.on_conflict_do_update(
        index_elements=["id"],
        set_={
            "message_id": upsert.excluded.message_id,
            "chat_id": upsert.excluded.chat_id,
            "position": upsert.excluded.position,
        },
    ).returning(*ATTACHMENT)


async def _save_inbound_files(tx: DriverTx, rows: list[dict[str, Any]]) -> dict[str, Attachment]:
    """Record the files of new customer messages; each as it now stands, by id.

    A file that ingest already reported (it was quicker than the contact lookup) keeps what the
    report said; it only learns its message. One statement per file: few messages carry any.
    """
    saved = [(await tx.fetch(_save_file(tx.postgres), row))[0] for row in rows]
    return {row[0]: _attachment(row) for row in saved}


# What a file is, as an `Attachment`: its columns, in the order `_attachment` reads them.
ATTACHMENT = (
    FILES.c.id,
    FILES.c.kind,
    FILES.c.name,
    FILES.c.mime_type,
    FILES.c.size,
    FILES.c.state,
    FILES.c.error,
    FILES.c.blob_key,
)


def _attachment(row: Sequence[Any]) -> Attachment:
    return Attachment(**{column.key: value for column, value in zip(ATTACHMENT, row, strict=True)})


async def files_of(
    session: AsyncSession, message_ids: Sequence[str]
) -> dict[str, list[Attachment]]:
    """The files of these messages, in their order, by message id."""
    found: dict[str, list[Attachment]] = defaultdict(list)
    if message_ids:
        rows = await session.execute(
            select(FILES.c.message_id, *ATTACHMENT)
            .where(FILES.c.message_id.in_(message_ids))
            .order_by(FILES.c.message_id, FILES.c.position)
        )
        for message_id, *attachment in rows:
            found[message_id].append(_attachment(attachment))
    return found


async def record_file(session: AsyncSession, fetched: AttachmentFetched) -> None:
    """ingest's word on a customer's file: stored, too large, or failed.

    Only a pending file changes (a repeated report changes nothing); if its message is here
    already, the console hears of it.
    """
    a = fetched.attachment
    upsert = dialect_insert(on_postgres(session), FILES)
    changed = (
        await session.execute(
            upsert.values(_file_row(a, None, None, 0))
            .on_conflict_do_update(
                index_elements=["id"],
                set_={
                    column: getattr(upsert.excluded, column)
                    for column in ("name", "mime_type", "size", "state", "error", "blob_key")
                },
                where=FILES.c.state == "pending",
            )
            .returning(FILES.c.message_id)
        )
    ).first()
    if changed is None or changed.message_id is None:
        return  # a repeat, or the message is still on its way: it will carry the news
    message = await session.get(Message, changed.message_id)
    if message is None:
        return
    agent_id = await session.scalar(select(CHATS.c.agent_id).where(CHATS.c.id == message.chat_id))
    files = await files_of(session, [message.id])
    emit(
        session,
        ChatMessageUpdated(
            chat_id=message.chat_id, agent_id=agent_id, message=message.view(files[message.id])
        ),
        subject=message.chat_id,
    )


async def get_file(session: AsyncSession, file_id: str) -> MessageFile | None:
    """A file of a message (one reported before its message arrived is not yet anyone's)."""
    found = await session.get(MessageFile, file_id)
    return found if found is not None and found.message_id is not None else None


async def record_offers(tx: DriverTx, offers: Sequence[ChatOffered]) -> None:
    """Mirror routing's offers: a new chat shows whom it is offered to."""
    await tx.execute_many(
        _OFFERED, [{"offered_chat": o.chat_id, "to_agent": o.agent_id} for o in offers]
    )


_OFFERED = (
    update(CHATS)
    .where(CHATS.c.id == bindparam("offered_chat"), CHATS.c.status == "new")
    .values(agent_id=bindparam("to_agent"))
)


async def record_acceptance(session: AsyncSession, accepted: ChatAccepted) -> None:
    await session.execute(
        update(CHATS)
        .where(CHATS.c.id == accepted.chat_id, CHATS.c.status != "completed")
        .values(status="active", agent_id=accepted.agent_id, accepted_at=accepted.accepted_at)
    )


async def record_transfer(session: AsyncSession, moved: ChatTransferred) -> None:
    """Mirror routing's transfers: the chat's queue, and its new owner if it has one."""
    await session.execute(
        update(CHATS)
        .where(CHATS.c.id == moved.chat_id, CHATS.c.status != "completed")
        .values(
            queue_id=moved.to_queue_id,
            agent_id=moved.to_agent_id,
            status="active" if moved.to_agent_id else "new",
            accepted_at=moved.transferred_at if moved.to_agent_id else None,
        )
    )


async def record_overdue(session: AsyncSession, overdue: ChatReplyOverdue) -> None:
    """A chat taken from an owner who did not answer in time is new again."""
    if overdue.reoffered:
        await session.execute(
            update(CHATS)
            .where(CHATS.c.id == overdue.chat_id, CHATS.c.status != "completed")
            .values(status="new", agent_id=None, accepted_at=None)
        )


async def complete_due(session: AsyncSession, due: ChatCompletionDue) -> None:
    """Routing's word that the chat is over (the customer went quiet, or nobody took it)."""
    chat = await session.get(Chat, due.chat_id, with_for_update=True)
    if chat is not None:
        await complete(session, chat, None)


async def post_reply(
    session: AsyncSession,
    chat: Chat,
    agent_id: str,
    text: str | None,
    file: ReplyFile | None = None,
) -> MessageView:
    """An agent's reply, text or a file (already in the blob store) with an optional caption."""
    if chat.status == "completed":
        raise ChatClosed(chat.id)
    now = utcnow()
    message = Message(
        id=new_id(),
        chat_id=chat.id,
        direction="out",
        text=text,
        created_at=now,
        author_agent_id=agent_id,
        delivery_status="pending",
    )
    session.add(message)
    attachments = []
    if file is not None:
        attachment = Attachment(
            kind=file.kind,
            name=file.name,
            mime_type=file.mime_type,
            size=file.size,
            state="stored",
            blob_key=file.blob_key,
        )
        session.add(MessageFile(**_file_row(attachment, message.id, chat.id, 0)))
        attachments.append(attachment)
    chat.last_message_at = now
    chat.last_message_preview = preview(text, attachments)
    chat.awaiting_reply_since = None
    await session.flush()
    view = message.view(attachments)
    emit(
        session,
        ChatReplyPosted(
            chat_id=chat.id,
            agent_id=agent_id,
            channel_id=chat.channel_id,
            platform=chat.platform,
            external_chat_id=chat.external_chat_id,
            message=view,
        ),
        subject=chat.id,
    )
    return view


# How far an outgoing message has got; `failed` ends a message that never got anywhere.
DELIVERY_PROGRESS = {"pending": 0, "sent": 1, "failed": 1, "delivered": 2, "read": 3}


async def record_delivery(session: AsyncSession, update: DeliveryUpdated) -> None:
    message = await session.get(Message, update.message_id)
    if message is None:
        return
    # Receipts can overtake each other on the bus (a retried handler): never step back.
    if DELIVERY_PROGRESS[update.status] < DELIVERY_PROGRESS.get(message.delivery_status or "", 0):
        return
    message.delivery_status = update.status
    message.delivery_error = update.error
    chat = await session.get(Chat, message.chat_id)
    files = await files_of(session, [message.id])
    emit(
        session,
        ChatMessageStatusChanged(
            chat_id=message.chat_id,
            agent_id=chat.agent_id if chat else None,
            message=message.view(files[message.id]),
        ),
        subject=message.chat_id,
    )


async def complete(session: AsyncSession, chat: Chat, by_agent: str | None) -> bool:
    """Complete the chat; False if it already was."""
    if chat.status == "completed":
        return False
    chat.status = "completed"
    chat.completed_at = utcnow()
    emit(
        session,
        ChatCompleted(
            chat_id=chat.id,
            agent_id=chat.agent_id,
            completed_by=by_agent,
            completed_at=chat.completed_at,
        ),
        subject=chat.id,
    )
    return True


async def chats_by_ids(session: AsyncSession, ids: Sequence[str]) -> list[Chat]:
    if not ids:
        return []
    rows = await session.scalars(
        select(Chat).where(Chat.id.in_(ids)).order_by(Chat.last_message_at.desc())
    )
    return list(rows)


async def messages_of(session: AsyncSession, chat_id: str) -> list[MessageView]:
    """The chat's messages in the platform's order (see `ordering.py`), with their files."""
    rows = conversation_order(
        list(await session.scalars(select(Message).where(Message.chat_id == chat_id)))
    )
    files = await files_of(session, [m.id for m in rows])
    return [m.view(files.get(m.id, [])) for m in rows]


async def chats_of_channel(session: AsyncSession, channel_id: str) -> int:
    """How many chats a channel has had (a channel with chats is not deleted)."""
    count: int = (
        await session.scalar(
            select(func.count()).select_from(CHATS).where(CHATS.c.channel_id == channel_id)
        )
        or 0
    )
    return count


async def repoint_contacts(session: AsyncSession, merged: ContactMerged) -> None:
    """Merged contacts' chats become the survivor's; later messages attributed to a merged
    contact will be too. Idempotent: a second run finds nothing left to move."""
    gone = merged.merged_ids
    if on_postgres(session):
        await session.execute(advisory_locks(), {"namespace": MERGES, "keys": sorted(gone)})
    await session.execute(
        insert_ignore(on_postgres(session), MERGED),
        [
            {
                "merged_id": m,
                "survivor_id": merged.survivor_id,
                "survivor_name": merged.survivor_name,
            }
            for m in gone
        ],
    )
    # Contacts merged into these before now lead to the survivor too.
    await session.execute(
        update(MERGED)
        .where(MERGED.c.survivor_id.in_(gone))
        .values(survivor_id=merged.survivor_id, survivor_name=merged.survivor_name)
    )
    # A message of a moved identity may have opened a chat on the survivor before this event
    # arrived: the merged contact's open chat of that conversation is then completed, as the
    # customer goes on in the newer one.
    theirs = CHATS.alias("survivor_chats")
    survivors = (
        select(theirs.c.id)
        .where(
            theirs.c.contact_id == merged.survivor_id,
            theirs.c.channel_id == Chat.channel_id,
            theirs.c.external_chat_id == Chat.external_chat_id,
            theirs.c.status != "completed",
        )
        .exists()
    )
    for clash in await session.scalars(
        select(Chat).where(Chat.contact_id.in_(gone), Chat.status != "completed", survivors)
    ):
        await complete(session, clash, None)
    await session.flush()
    await session.execute(
        update(CHATS)
        .where(CHATS.c.contact_id.in_([*gone, merged.survivor_id]))
        .values(contact_id=merged.survivor_id, contact_name=merged.survivor_name)
    )


async def rename_contact(session: AsyncSession, updated: ContactUpdated) -> None:
    """Chats show their contact's current name."""
    await session.execute(
        update(CHATS)
        .where(CHATS.c.contact_id == updated.contact_id, CHATS.c.contact_name != updated.name)
        .values(contact_name=updated.name)
    )
    await session.execute(
        update(MERGED)
        .where(MERGED.c.survivor_id == updated.contact_id)
        .values(survivor_name=updated.name)
    )


async def chats_of_contact(
    session: AsyncSession, contact_id: str, *, before: datetime | None, limit: int
) -> list[Chat]:
    """A contact's chats, newest first (`before`: opened before that, for the next page)."""
    query = select(Chat).where(Chat.contact_id == contact_id)
    if before is not None:
        query = query.where(Chat.opened_at < before)
    rows = await session.scalars(query.order_by(Chat.opened_at.desc(), Chat.id).limit(limit))
    return list(rows)


async def messages_of_chats(
    session: AsyncSession, chat_ids: Sequence[str]
) -> dict[str, list[MessageView]]:
    """Each chat's messages in the platform's order (see `ordering.py`), with their files."""
    found: dict[str, list[Message]] = {chat_id: [] for chat_id in chat_ids}
    if chat_ids:
        for message in await session.scalars(select(Message).where(Message.chat_id.in_(chat_ids))):
            found[message.chat_id].append(message)
    files = await files_of(session, [m.id for messages in found.values() for m in messages])
    return {
        chat_id: [m.view(files.get(m.id, [])) for m in conversation_order(messages)]
        for chat_id, messages in found.items()
    }
