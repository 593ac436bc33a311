"""chat's record of a message's files (migrated, on PostgreSQL and SQLite): ingest's report on a
file may come before the message itself, or after it, or twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from libs.common.db import Database
from libs.common.driver import driver_transaction
from libs.common.envelope import new_id, utcnow
from libs.common.events import (
    Attachment,
    AttachmentFetched,
    InboundMessage,
    InboundResolved,
    Sender,
)
from services.chat import service

CHAT = Path(service.__file__).parent
KEY = "ab" * 32


def resolved(*attachments: Attachment) -> InboundResolved:
    return InboundResolved(
        contact_id=new_id(),
        contact_name="Ivan",
        contact_created=True,
        message=InboundMessage(
            channel_id=new_id(),
            queue_id=new_id(),
            platform="telegram",
            external_user_id="555",
            external_chat_id="555",
            external_message_id=new_id(),
            sender=Sender(first_name="Ivan"),
            attachments=list(attachments),
            sent_at=utcnow(),
        ),
    )


def stored(attachment: Attachment) -> AttachmentFetched:
    return AttachmentFetched(
        channel_id=new_id(),
        attachment=attachment.model_copy(
            update={
                "state": "stored",
                "blob_key": KEY,
                "name": "file_1.jpg",
                "mime_type": "image/jpeg",
                "size": 1234,
                "platform_file_id": None,
            }
        ),
    )


def emitted(db: Database, event_type: str) -> list[dict[str, Any]]:
    """The payloads of the events of this type committed since the last call (what this
    process's relay was handed; nothing relays them here)."""
    envelopes = [envelope for _, envelope in db.committed]
    db.committed.clear()
    return [e.data for e in envelopes if e.type == event_type]


async def test_a_report_after_the_message_updates_it_for_the_console(db: Database) -> None:
    photo = Attachment(kind="photo", size=1234, platform_file_id="AgAC-file-id")
    async with driver_transaction(db) as tx:
        await service.thread_inbound(tx, [resolved(photo)])
    [received] = emitted(db, "chat.message_received")
    [shown] = received["message"]["attachments"]
    assert shown["id"] == photo.id and shown["state"] == "pending"
    assert shown["platform_file_id"] is None  # ingest's business, not the console's

    async with db.transaction() as session:
        await service.record_file(session, stored(photo))
    [updated] = emitted(db, "chat.message_updated")
    assert updated["chat_id"] == received["chat_id"]
    assert updated["message"]["id"] == received["message"]["id"]
    [now] = updated["message"]["attachments"]
    assert (now["state"], now["blob_key"], now["name"]) == ("stored", KEY, "file_1.jpg")

    async with db.sessions() as session:
        [message] = await service.messages_of(session, received["chat_id"])
        found = await service.get_file(session, photo.id)
    assert message.attachments[0].state == "stored"
    assert found is not None and found.chat_id == received["chat_id"]


async def test_a_report_before_the_message_is_kept_for_it(db: Database) -> None:
    photo = Attachment(kind="photo", platform_file_id="AgAC-file-id")
    async with db.transaction() as session:
        await service.record_file(session, stored(photo))
    assert emitted(db, "chat.message_updated") == []  # no message to update yet
    async with db.sessions() as session:
        assert await service.get_file(session, photo.id) is None  # nobody's file yet

    async with driver_transaction(db) as tx:
        await service.thread_inbound(tx, [resolved(photo)])
    [received] = emitted(db, "chat.message_received")
    [shown] = received["message"]["attachments"]
    assert (shown["state"], shown["blob_key"], shown["size"]) == ("stored", KEY, 1234)


async def test_a_repeated_or_late_report_changes_nothing(db: Database) -> None:
    photo = Attachment(kind="photo", platform_file_id="AgAC-file-id")
    async with driver_transaction(db) as tx:
        await service.thread_inbound(tx, [resolved(photo)])
    async with db.transaction() as session:
        await service.record_file(session, stored(photo))
    failed = AttachmentFetched(
        channel_id=new_id(),
        attachment=photo.model_copy(update={"state": "failed", "error": "gone"}),
    )
    db.committed.clear()  # what the first report told
    async with db.transaction() as session:
        await service.record_file(session, stored(photo))
        await service.record_file(session, failed)
    assert emitted(db, "chat.message_updated") == []
    async with db.sessions() as session:
        found = await service.get_file(session, photo.id)
    assert found is not None and (found.state, found.error) == ("stored", None)
