"""Downloading customers' files after the webhook (services/ingest/fetching.py), on ingest's
migrated tables (PostgreSQL and SQLite), the fake Bot API and a directory blob store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from libs.common.blobs import DirectoryBlobStore
from libs.common.db import Database
from libs.common.driver import driver_transaction
from libs.common.envelope import new_id, utcnow
from libs.common.events import Attachment, ContactCreated
from services.ingest import fetching
from services.ingest.channels import ChannelCache
from services.ingest.models import Channel
from services.ingest.sending import RetryPolicy
from services.ingest.telegram import TelegramBots
from services.ingest.telegram_files import TelegramFiles
from tests.support.channels import stored_telegram_channel
from tests.support.fake_telegram import FakeTelegram

TOKEN = "123456:TEST-token_abc"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20


@pytest.fixture
async def channel(db: Database, fake_telegram: FakeTelegram) -> Channel:
    return await stored_telegram_channel(db, fake_telegram.url, TOKEN)


@pytest.fixture
async def blobs(tmp_path: Path) -> DirectoryBlobStore:
    return DirectoryBlobStore(tmp_path / "blobs")


def new_fetcher(
    db: Database,
    blobs: DirectoryBlobStore,
    bots: TelegramBots,
    *,
    attempts: int = 3,
    **options: Any,
) -> fetching.Fetcher:
    """A fetcher of Telegram files (the fake Bot API) that retries quickly; `options` are the
    Fetcher's own (`cache` replaces the default channel cache)."""
    return fetching.Fetcher(
        db,
        blobs,
        options.pop("cache", None) or ChannelCache(db),
        {"telegram": TelegramFiles(bots)},
        RetryPolicy(attempts=attempts, backoff_s=0.05),
        limit=1024 * 1024,
        **options,
    )


@pytest.fixture
async def fetcher(db: Database, blobs: DirectoryBlobStore) -> AsyncIterator[fetching.Fetcher]:
    bots = TelegramBots()
    worker = new_fetcher(db, blobs, bots, cache=ChannelCache(db, ttl_s=0), poll_s=0.1)
    await worker.start()
    yield worker
    await worker.stop()
    await bots.close()


async def download(
    db: Database, fetcher: fetching.Fetcher, channel: Channel, attachment: Attachment
) -> dict[str, Any]:
    """Queue the file as a webhook does; what ingest reports once the queue is empty."""
    async with driver_transaction(db) as tx:
        await fetching.add_jobs(tx, fetching.attachment_jobs(channel.id, [attachment]))
    fetcher.wake()
    await drained(db)
    [report] = await outbox(db, "inbound.attachment_fetched")
    assert report["attachment"]["id"] == attachment.id
    assert report["attachment"]["platform_file_id"] is None
    attached: dict[str, Any] = report["attachment"]
    return attached


async def drained(db: Database, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while True:
            async with db.sessions() as session:
                if not await session.scalar(select(func.count()).select_from(fetching.FETCHES)):
                    return
            await asyncio.sleep(0.05)


async def outbox(db: Database, event_type: str) -> list[dict[str, Any]]:
    async with db.sessions() as session:
        rows = await session.scalars(select(db.outbox.c.envelope).order_by(db.outbox.c.id))
        envelopes = [json.loads(row) for row in rows]
    return [e["data"] for e in envelopes if e["type"] == event_type]


async def test_a_file_is_stored_under_its_key(
    db: Database,
    fetcher: fetching.Fetcher,
    channel: Channel,
    fake_telegram: FakeTelegram,
    blobs: DirectoryBlobStore,
) -> None:
    file_id = fake_telegram.add_file(JPEG, "photos", "jpg")

    stored = await download(
        db, fetcher, channel, Attachment(kind="photo", platform_file_id=file_id)
    )

    assert stored["state"] == "stored" and stored["size"] == len(JPEG)
    assert (stored["name"], stored["mime_type"]) == ("file_0.jpg", "image/jpeg")
    blob = await blobs.get(stored["blob_key"])
    assert blob is not None and blob.data == JPEG
    assert fake_telegram.downloads == [(TOKEN, "photos/file_0.jpg")]


async def test_many_files_are_leased_in_batches_and_each_reported_once(
    db: Database, channel: Channel, fake_telegram: FakeTelegram, blobs: DirectoryBlobStore
) -> None:
    bots = TelegramBots()
    worker = new_fetcher(db, blobs, bots, concurrency=3, batch=5, poll_s=0.1)
    files = [
        Attachment(kind="photo", platform_file_id=fake_telegram.add_file(JPEG, "photos", "jpg"))
        for _ in range(12)
    ]
    fake_telegram.errors["getFile"] = [(502, "Bad Gateway")]  # one of them retried
    async with driver_transaction(db) as tx:
        await fetching.add_jobs(tx, fetching.attachment_jobs(channel.id, files))
    await worker.start()
    try:
        worker.wake()
        await drained(db)
    finally:
        await worker.stop()
        await bots.close()

    reports = await outbox(db, "inbound.attachment_fetched")
    assert sorted(r["attachment"]["id"] for r in reports) == sorted(a.id for a in files)
    assert {r["attachment"]["state"] for r in reports} == {"stored"}
    assert len(fake_telegram.downloads) == 12


async def test_an_outage_is_retried_then_the_file_stored(
    db: Database, fetcher: fetching.Fetcher, channel: Channel, fake_telegram: FakeTelegram
) -> None:
    file_id = fake_telegram.add_file(JPEG, "documents", "pdf")
    fake_telegram.errors["getFile"] = [(502, "Bad Gateway")]
    document = Attachment(
        kind="document", name="a.pdf", mime_type="application/pdf", platform_file_id=file_id
    )

    stored = await download(db, fetcher, channel, document)

    assert stored["state"] == "stored" and stored["name"] == "a.pdf"
    assert len(fake_telegram.sent("getFile")) == 2


async def test_an_outage_that_lasts_fails_the_file_saying_why(
    db: Database, fetcher: fetching.Fetcher, channel: Channel, fake_telegram: FakeTelegram
) -> None:
    file_id = fake_telegram.add_file(JPEG, "photos", "jpg")
    fake_telegram.errors["getFile"] = [(500, "Internal Server Error")] * 3

    failed = await download(
        db, fetcher, channel, Attachment(kind="photo", platform_file_id=file_id)
    )

    assert failed["state"] == "failed"
    assert failed["error"] == "Telegram could not be reached. Gave up after 3 attempts."
    assert failed["blob_key"] is None


async def test_too_big_for_bots_or_for_chatdesk_is_too_large(
    db: Database, fetcher: fetching.Fetcher, channel: Channel, fake_telegram: FakeTelegram
) -> None:
    # Telegram did not say how big it is, and refuses it at getFile.
    huge = fake_telegram.add_file(b"x", "videos", "mp4", size=30 * 1024 * 1024)
    too_large = await download(
        db, fetcher, channel, Attachment(kind="video", platform_file_id=huge)
    )
    assert too_large["state"] == "too_large" and "20 MB" in too_large["error"]

    # Within Telegram's limit, but over chatdesk's (1 MB here): nothing is downloaded.
    big = fake_telegram.add_file(b"y" * (2 * 1024 * 1024), "documents", "zip")
    async with db.transaction() as session:
        await session.execute(db.outbox.delete())
    over = await download(db, fetcher, channel, Attachment(kind="document", platform_file_id=big))
    assert over["state"] == "too_large" and "1 MB" in over["error"]
    assert fake_telegram.downloads == []


async def test_a_picture_is_reported_for_the_contact_and_none_is_quietly_none(
    db: Database,
    fetcher: fetching.Fetcher,
    channel: Channel,
    fake_telegram: FakeTelegram,
    blobs: DirectoryBlobStore,
) -> None:
    fake_telegram.add_profile_photo(42, (b"small", 160, 160), (JPEG, 640, 640))
    contacts = [new_id(), new_id()]
    created = [
        ContactCreated(
            contact_id=contact_id,
            name="Ivan",
            platform="telegram",
            external_user_id=user,
            channel_id=channel.id,
        )
        for contact_id, user in zip(contacts, ("42", "43"), strict=True)
    ]
    async with driver_transaction(db) as tx:
        await fetching.add_picture_jobs(tx, created)
        await fetching.add_picture_jobs(tx, created[:1])  # a repeat: ignored
    fetcher.wake()
    await drained(db)

    [picture] = await outbox(db, "profile.picture_fetched")
    assert picture["contact_id"] == contacts[0] and picture["content_type"] == "image/jpeg"
    blob = await blobs.get(picture["blob_key"])
    assert blob is not None and blob.data == JPEG  # the largest size


async def test_a_download_interrupted_by_shutdown_is_handed_back(
    db: Database, channel: Channel, fake_telegram: FakeTelegram, blobs: DirectoryBlobStore
) -> None:
    file_id = fake_telegram.add_file(JPEG, "photos", "jpg")
    fake_telegram.delays["download"] = 2  # long enough to stop the worker mid-download
    bots = TelegramBots()
    worker = new_fetcher(db, blobs, bots)
    await worker.start()
    attachment = Attachment(kind="photo", platform_file_id=file_id)
    async with driver_transaction(db) as tx:
        await fetching.add_jobs(tx, fetching.attachment_jobs(channel.id, [attachment]))
    worker.wake()
    async with asyncio.timeout(10):
        while not fake_telegram.downloads:
            await asyncio.sleep(0.05)

    await worker.stop()
    await bots.close()

    async with db.sessions() as session:
        job = (await session.execute(select(fetching.FETCHES))).one()
    assert job.id == attachment.id and job.lease_id is None and job.due_at <= utcnow()
    assert await outbox(db, "inbound.attachment_fetched") == []


async def test_a_store_that_keeps_failing_fails_the_file_in_the_end(
    db: Database, channel: Channel, fake_telegram: FakeTelegram, tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "occupied"
    not_a_folder.write_text("a file where the store's folder should be")
    bots = TelegramBots()
    worker = new_fetcher(
        db, DirectoryBlobStore(not_a_folder / "blobs"), bots, attempts=2, poll_s=0.1
    )
    await worker.start()
    file_id = fake_telegram.add_file(JPEG, "photos", "jpg")
    try:
        failed = await download(
            db, worker, channel, Attachment(kind="photo", platform_file_id=file_id)
        )
    finally:
        await worker.stop()
        await bots.close()

    assert failed["state"] == "failed"
    assert failed["error"] == "Something went wrong storing the file."
    assert len(fake_telegram.downloads) == 2


async def test_a_worker_whose_lease_ran_out_leaves_the_report_to_the_one_that_took_over(
    db: Database, channel: Channel, fake_telegram: FakeTelegram, blobs: DirectoryBlobStore
) -> None:
    file_id = fake_telegram.add_file(JPEG, "photos", "jpg")
    attachment = Attachment(kind="photo", platform_file_id=file_id)
    async with driver_transaction(db) as tx:
        await fetching.add_jobs(tx, fetching.attachment_jobs(channel.id, [attachment]))
    bots = TelegramBots()
    slow, other = new_fetcher(db, blobs, bots), new_fetcher(db, blobs, bots)
    try:
        [first] = await slow._lease(1)
        async with db.transaction() as session:  # its lease runs out before it is done
            await session.execute(update(fetching.FETCHES).values(due_at=utcnow()))
        [second] = await other._lease(1)
        assert (second.id, second.lease_id != first.lease_id) == (first.id, True)

        await slow._work(first)  # downloaded, but the job is no longer its own
        assert await outbox(db, "inbound.attachment_fetched") == []
        await other._work(second)
        [report] = await outbox(db, "inbound.attachment_fetched")
        assert (report["attachment"]["id"], report["attachment"]["state"]) == (
            attachment.id,
            "stored",
        )
        await drained(db)
    finally:
        for worker in (slow, other):
            await worker.stop()
        await bots.close()
