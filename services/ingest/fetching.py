"""Downloading customers' files and pictures after the webhook has answered.

A webhook only records what to download (a `fetches` row, committed with the message), because
a platform's file can take long to come and the platform retries webhooks that do. Pictures are
asked for when contacts announces a new contact. `Fetcher` works the table off in the
background, a few files at a time per process, and any replica may take any row:
- the file goes to the blob store; the row is deleted and the outcome emitted in one
  transaction: `inbound.attachment_fetched` (stored, too_large or failed) for chat, or
  `profile.picture_fetched` for contacts;
- an outage is tried again later (`RetryPolicy`), then the file is failed with the reason;
- a customer without a picture, or whose picture cannot be had, just has none (a log line).

Not a bus handler: a download must not hold a consumer, and in embedded mode the in-process bus
would make ingest's next events wait for it (decision 5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, exists, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.blobs import BlobStore
from libs.common.db import Database, after_commit, insert_ignore
from libs.common.envelope import Event, new_id, utcnow
from libs.common.events import Attachment, AttachmentFetched, ContactCreated, PictureFetched
from libs.common.outbox import emit
from services.ingest.channels import ChannelCache
from services.ingest.files import FetchFailed, FileSource, FileTooLarge
from services.ingest.models import Channel, Fetch
from services.ingest.sending import RetryPolicy

log = logging.getLogger(__name__)

FETCHES = cast(Table, Fetch.__table__)
# Longer than any download may take (they time out well before): then the row is anyone's.
LEASE = timedelta(minutes=5)


def attachment_jobs(channel_id: str, attachments: list[Attachment]) -> list[dict[str, Any]]:
    """Rows for the files of a message that are still to be downloaded."""
    now = utcnow()
    return [
        {
            "id": a.id,
            "kind": "attachment",
            "channel_id": channel_id,
            "payload": a.model_dump(mode="json"),
            "attempts": 0,
            "due_at": now,
            "created_at": now,
        }
        for a in attachments
        if a.state == "pending"
    ]


async def add_jobs(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    await session.execute(insert(FETCHES), rows)


async def add_picture_job(session: AsyncSession, contact: ContactCreated) -> None:
    now = utcnow()
    await session.execute(
        insert_ignore(session, FETCHES),
        {
            "id": contact.contact_id,
            "kind": "picture",
            "channel_id": contact.channel_id,
            "payload": {"contact_id": contact.contact_id, "user_id": contact.external_user_id},
            "attempts": 0,
            "due_at": now,
            "created_at": now,
        },
    )


@dataclass(frozen=True)
class _Job:
    id: str
    kind: str
    channel_id: str
    payload: dict[str, Any]
    attempts: int
    lease_id: str


@dataclass(frozen=True)
class _Retry:
    reason: str


class Fetcher:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        channels: ChannelCache,
        sources: Mapping[str, FileSource],
        policy: RetryPolicy,
        *,
        limit: int,
        concurrency: int = 4,
        poll_s: float = 1.0,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.channels = channels
        self.sources = sources
        self.policy = policy
        self.limit = limit
        self.concurrency = concurrency
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._running: dict[asyncio.Task[None], _Job] = {}
        self._loop: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Something to download was committed in this process: look now, not at the next poll."""
        self._wake.set()

    def wake_after_commit(self, session: AsyncSession) -> None:
        after_commit(session, self.wake)

    async def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="ingest:fetcher")

    async def stop(self) -> None:
        unfinished = list(self._running.values())
        tasks = [t for t in (self._loop, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if unfinished:
            # Interrupted downloads are anyone's again at once, not when their lease runs out.
            try:
                async with self.db.transaction() as session:
                    for job in unfinished:
                        await session.execute(
                            update(FETCHES)
                            .where(FETCHES.c.id == job.id, FETCHES.c.lease_id == job.lease_id)
                            .values(due_at=utcnow(), lease_id=None)
                        )
            except Exception:  # their leases run out instead
                log.exception("could not hand back interrupted downloads")

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            free = self.concurrency - len(self._running)
            if free > 0:
                try:
                    jobs = await self._lease(free)
                except Exception:
                    log.exception("could not take files to download; trying again")
                    jobs = []
                for job in jobs:
                    task = asyncio.create_task(self._work(job), name=f"fetch:{job.id}")
                    self._running[task] = job
                    task.add_done_callback(self._finished)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._wake.set()  # a free slot

    async def _lease(self, count: int) -> list[_Job]:
        now = utcnow()
        async with self.db.sessions() as session:  # most polls find nothing: no write for them
            if not await session.scalar(select(exists().where(FETCHES.c.due_at <= now))):
                return []
        lease_id = new_id()
        async with self.db.transaction() as session:
            due = (
                select(FETCHES.c.id)
                .where(FETCHES.c.due_at <= now)
                .order_by(FETCHES.c.due_at)
                .limit(count)
                .with_for_update(skip_locked=True)
            )
            rows = await session.execute(
                update(FETCHES)
                .where(FETCHES.c.id.in_(due.scalar_subquery()))
                .values(due_at=now + LEASE, lease_id=lease_id)
                .returning(
                    FETCHES.c.id,
                    FETCHES.c.kind,
                    FETCHES.c.channel_id,
                    FETCHES.c.payload,
                    FETCHES.c.attempts,
                )
            )
            return [
                _Job(row.id, row.kind, row.channel_id, row.payload, row.attempts, lease_id)
                for row in rows
            ]

    async def _work(self, job: _Job) -> None:
        try:
            outcome = await self._fetch(job)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug, or the blob store: try again later, like an outage
            log.exception("file download failed", extra={"fetch_id": job.id})
            outcome = _Retry("Something went wrong storing the file.")
            if job.attempts + 1 >= self.policy.attempts:
                outcome = self._given_up(job, outcome.reason)
        try:
            await self._record(job, outcome)
        except Exception:  # the lease runs out and the job is tried again
            log.exception("could not record a file download", extra={"fetch_id": job.id})

    async def _fetch(self, job: _Job) -> Event | _Retry | None:
        channel = await self.channels.get(job.channel_id)
        source = self.sources.get(channel.kind) if channel is not None else None
        if job.kind == "picture":
            return await self._picture(job, channel, source)
        attachment = Attachment.model_validate(job.payload)
        try:
            if channel is None or source is None or not channel.active:
                raise FetchFailed("The channel of this message is no longer active.")
            downloaded = await source.attachment(channel, attachment, self.limit)
            key = await self.blobs.put(
                downloaded.data, content_type=downloaded.content_type, name=downloaded.name
            )
            result = attachment.model_copy(
                update={
                    "state": "stored",
                    "blob_key": key,
                    "name": downloaded.name,
                    "mime_type": downloaded.content_type,
                    "size": len(downloaded.data),
                }
            )
        except FileTooLarge as exc:
            result = attachment.model_copy(update={"state": "too_large", "error": exc.reason})
        except FetchFailed as exc:
            if exc.temporary and job.attempts + 1 < self.policy.attempts:
                return _Retry(exc.reason)
            reason = exc.reason
            if exc.temporary:
                reason += f" Gave up after {self.policy.attempts} attempts."
            log.info("customer's file not downloaded: %s", reason, extra={"fetch_id": job.id})
            result = attachment.model_copy(update={"state": "failed", "error": reason})
        return AttachmentFetched(
            channel_id=job.channel_id,
            attachment=result.model_copy(update={"platform_file_id": None}),
        )

    def _given_up(self, job: _Job, reason: str) -> Event | None:
        """What is reported of a job that kept failing: a failed file, or no picture."""
        if job.kind == "picture":
            return None
        attachment = Attachment.model_validate(job.payload)
        return AttachmentFetched(
            channel_id=job.channel_id,
            attachment=attachment.model_copy(
                update={"state": "failed", "error": reason, "platform_file_id": None}
            ),
        )

    async def _picture(
        self, job: _Job, channel: Channel | None, source: FileSource | None
    ) -> PictureFetched | _Retry | None:
        contact_id, user_id = job.payload["contact_id"], job.payload["user_id"]
        if channel is None or source is None or not channel.active:
            return None
        try:
            downloaded = await source.picture(channel, user_id, self.limit)
        except (FetchFailed, FileTooLarge) as exc:
            temporary = isinstance(exc, FetchFailed) and exc.temporary
            if temporary and job.attempts + 1 < self.policy.attempts:
                return _Retry(exc.reason)
            log.info(
                "contact's picture not downloaded: %s",
                exc.reason,
                extra={"contact_id": contact_id, "channel_id": channel.id},
            )
            return None
        if downloaded is None:
            log.info("contact has no profile picture", extra={"contact_id": contact_id})
            return None
        key = await self.blobs.put(
            downloaded.data, content_type=downloaded.content_type, name=downloaded.name
        )
        return PictureFetched(
            contact_id=contact_id,
            channel_id=channel.id,
            blob_key=key,
            content_type=downloaded.content_type,
            size=len(downloaded.data),
        )

    async def _record(self, job: _Job, outcome: Event | _Retry | None) -> None:
        mine = (FETCHES.c.id == job.id) & (FETCHES.c.lease_id == job.lease_id)
        async with self.db.transaction() as session:
            if isinstance(outcome, _Retry):
                wait = timedelta(seconds=self.policy.wait(job.attempts + 1))
                log.info("file download to be retried: %s", outcome.reason)
                await session.execute(
                    update(FETCHES)
                    .where(mine)
                    .values(attempts=job.attempts + 1, due_at=utcnow() + wait, lease_id=None)
                )
                return
            deleted = await session.execute(delete(FETCHES).where(mine))
            # rowcount 0: the lease ran out and another worker has the job; it reports instead.
            if outcome is not None and getattr(deleted, "rowcount", 0) == 1:
                subject = (
                    outcome.contact_id
                    if isinstance(outcome, PictureFetched)
                    else cast(AttachmentFetched, outcome).attachment.id
                )
                emit(session, outcome, subject=subject)
