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
import functools
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    delete,
    exists,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.sql.dml import ReturningDelete

from libs.common.batching import GroupCommit
from libs.common.blobs import BlobStore
from libs.common.db import Database, given_rows, insert_ignore
from libs.common.driver import DriverTx, driver_transaction
from libs.common.envelope import Event, new_id, utcnow
from libs.common.events import Attachment, AttachmentFetched, ContactCreated, PictureFetched
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


async def add_jobs(tx: DriverTx, rows: list[dict[str, Any]]) -> None:
    await tx.execute_many(insert(FETCHES), rows)


async def add_picture_jobs(tx: DriverTx, contacts: Sequence[ContactCreated]) -> None:
    """The pictures of new contacts, to download (one round trip; a repeat is ignored)."""
    if not contacts:
        return
    now = utcnow()
    await tx.execute_many(
        insert_ignore(tx.postgres, FETCHES),
        [
            {
                "id": contact.contact_id,
                "kind": "picture",
                "channel_id": contact.channel_id,
                "payload": {"contact_id": contact.contact_id, "user_id": contact.external_user_id},
                "attempts": 0,
                "due_at": now,
                "created_at": now,
            }
            for contact in contacts
        ],
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


_Outcome = Event | _Retry | None

# Built once, so that their cache keys are computed once: a batch's outcomes as executemany.
_RETRY = (
    update(FETCHES)
    .where(FETCHES.c.id == bindparam("b_id"), FETCHES.c.lease_id == bindparam("b_lease_id"))
    .values(attempts=bindparam("b_attempts"), due_at=bindparam("b_due_at"), lease_id=None)
)


@functools.cache
def _done(postgres: bool) -> ReturningDelete[str]:
    """Deletes jobs, each only under the lease it was done under (another worker may hold it
    now); the ids deleted. The jobs come as two arrays (`id`, `lease_id`) on PostgreSQL, as
    pairs (`jobs`) on SQLite."""
    if postgres:
        given = given_rows(FETCHES, ("id", "lease_id"))
        done = and_(FETCHES.c.id == given.c.id, FETCHES.c.lease_id == given.c.lease_id)
    else:
        done = tuple_(FETCHES.c.id, FETCHES.c.lease_id).in_(bindparam("jobs", expanding=True))
    return delete(FETCHES).where(done).returning(FETCHES.c.id)


class Fetcher:
    """Leases due jobs in batches (`batch` at a time, when the previous batch has started),
    downloads them `concurrency` at a time, and records the outcomes of downloads that end
    together in one transaction."""

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
        batch: int = 32,
        poll_s: float = 1.0,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.channels = channels
        self.sources = sources
        self.policy = policy
        self.limit = limit
        self.concurrency = concurrency
        self.batch = max(batch, concurrency)
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._waiting: deque[tuple[float, _Job]] = deque()  # (leased at, job), not started
        self._running: dict[asyncio.Task[None], _Job] = {}
        self._records: GroupCommit[tuple[_Job, _Outcome], None] = GroupCommit(
            self._record, name="ingest.fetches"
        )
        self._loop: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Something to download was committed in this process: look now, not at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="ingest:fetcher")

    async def stop(self) -> None:
        unfinished = [*self._running.values(), *(job for _, job in self._waiting)]
        self._waiting.clear()
        tasks = [t for t in (self._loop, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._records.stop()
        if unfinished:
            # Interrupted downloads are anyone's again at once, not when their lease runs out.
            try:
                async with self.db.transaction() as session:
                    await session.execute(
                        _RETRY.values(attempts=FETCHES.c.attempts),
                        [
                            {"b_id": job.id, "b_lease_id": job.lease_id, "b_due_at": utcnow()}
                            for job in unfinished
                        ],
                    )
            except Exception:  # their leases run out instead
                log.exception("could not hand back interrupted downloads")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if not self._waiting and len(self._running) < self.concurrency:
                try:
                    jobs = await self._lease(self.batch - len(self._running))
                except Exception:
                    log.exception("could not take files to download; trying again")
                    jobs = []
                self._waiting.extend((loop.time(), job) for job in jobs)
            self._start_waiting()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)

    def _start_waiting(self) -> None:
        stale = asyncio.get_running_loop().time() - LEASE.total_seconds() / 2
        while self._waiting and len(self._running) < self.concurrency:
            leased_at, job = self._waiting.popleft()
            if leased_at < stale:
                continue  # waited too long behind slow downloads: its lease is anyone's soon
            task = asyncio.create_task(self._work(job), name=f"fetch:{job.id}")
            self._running[task] = job
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        if self._waiting:
            self._start_waiting()
        else:
            self._wake.set()  # a free slot, and nothing leased waits for it

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
            await self._records.submit((job, outcome))
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

    async def _record(self, batch: list[tuple[_Job, _Outcome]]) -> list[None]:
        """Downloads that ended together, in one transaction: each job is deleted and its
        outcome emitted, or (an outage) put back to be tried later."""
        retries = [(job, outcome) for job, outcome in batch if isinstance(outcome, _Retry)]
        done = [(job, outcome) for job, outcome in batch if not isinstance(outcome, _Retry)]
        async with driver_transaction(self.db) as tx:
            if retries:
                now = utcnow()
                for _, retry in retries:
                    log.info("file download to be retried: %s", retry.reason)
                await tx.execute_many(
                    _RETRY,
                    [
                        {
                            "b_id": job.id,
                            "b_lease_id": job.lease_id,
                            "b_attempts": job.attempts + 1,
                            "b_due_at": now + timedelta(seconds=self.policy.wait(job.attempts + 1)),
                        }
                        for job, _ in retries
                    ],
                )
            if done:
                jobs = [(job.id, job.lease_id) for job, _ in done]
                params = (
                    {"id": [id for id, _ in jobs], "lease_id": [lease for _, lease in jobs]}
                    if tx.postgres
                    else {"jobs": jobs}
                )
                deleted = {row[0] for row in await tx.fetch(_done(tx.postgres), params)}
                # Not deleted: the lease ran out and another worker has the job; it reports.
                for job, event in done:
                    if event is not None and job.id in deleted:
                        subject = (
                            event.contact_id
                            if isinstance(event, PictureFetched)
                            else cast(AttachmentFetched, event).attachment.id
                        )
                        tx.emit(event, subject=subject)
        return [None] * len(batch)
