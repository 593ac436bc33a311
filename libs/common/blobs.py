"""Where chatdesk keeps files: customers' attachments and pictures, agents' uploads.

One interface, two stores (architecture decision 12):
- `DirectoryBlobStore`: files under a directory (`CHATDESK_DATA_DIR/blobs`), for embedded mode and
  for services that share one machine;
- `PostgresBlobStore`: a `blobs` schema with one bytea table, which every replica of every
  service reaches through the database they already use.

A blob's key is the SHA-256 of its bytes: storing the same file twice (a retried download, one
picture for two contacts) stores it once, and a key always names the same bytes. The first
`put` of some bytes sets their content type and name; services keep their own name for a file
beside its key (chat's attachments, contacts' pictures). Keys are not secret, and are never a
URL: the console downloads files by attachment or contact, through the gateway's checks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    LargeBinary,
    MetaData,
    String,
    Table,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from libs.common.db import UTCDateTime
from libs.common.envelope import utcnow
from libs.common.settings import Settings

KEY = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Blob:
    key: str
    data: bytes
    content_type: str
    name: str

    @property
    def size(self) -> int:
        return len(self.data)


def blob_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore(ABC):
    async def prepare(self) -> None:
        """Get ready to serve (create what the store needs); safe to call more than once."""
        return None  # a directory needs nothing until the first put

    @abstractmethod
    async def put(self, data: bytes, *, content_type: str, name: str) -> str:
        """Store `data`; its key. Durable when this returns."""

    @abstractmethod
    async def get(self, key: str) -> Blob | None:
        """The blob, or None if the store has nothing under `key`."""

    @abstractmethod
    async def exists(self, key: str) -> bool: ...

    async def close(self) -> None:
        """Release connections."""
        return None


class DirectoryBlobStore(BlobStore):
    """`<root>/<first 2 hex digits>/<key>` holds the bytes and `<key>.json` their metadata.

    Both are written to a temporary file and renamed into place, the metadata last: a blob
    exists once its metadata does, so a crash mid-write leaves no half file behind a key.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _paths(self, key: str) -> tuple[Path, Path]:
        if not KEY.match(key):  # keys come from our services, but a path must never escape root
            raise ValueError("not a blob key")
        folder = self.root / key[:2]
        return folder / key, folder / f"{key}.json"

    async def put(self, data: bytes, *, content_type: str, name: str) -> str:
        key = blob_key(data)
        meta = json.dumps({"content_type": content_type, "name": name}).encode()
        await asyncio.to_thread(self._write, key, data, meta)
        return key

    def _write(self, key: str, data: bytes, meta: bytes) -> None:
        data_path, meta_path = self._paths(key)
        if meta_path.exists():
            return
        data_path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(data_path, data)
        _write_atomically(meta_path, meta)

    async def get(self, key: str) -> Blob | None:
        return await asyncio.to_thread(self._read, key)

    def _read(self, key: str) -> Blob | None:
        data_path, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_bytes())
            data = data_path.read_bytes()
        except FileNotFoundError:
            return None
        return Blob(key, data, meta["content_type"], meta["name"])

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._paths(key)[1].exists)


def _write_atomically(path: Path, content: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


SCHEMA = "blobs"
_metadata = MetaData(schema=SCHEMA)
BLOBS = Table(
    "blobs",
    _metadata,
    Column("key", String(64), primary_key=True),
    Column("content_type", String(200), nullable=False),
    Column("name", String(300), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)


class PostgresBlobStore(BlobStore):
    """The `blobs.blobs` table: one row per file, its bytes in a bytea column.

    The table belongs to no service (like the exchange, it is shared infrastructure); it is
    created on first start, under an advisory lock so that replicas starting together agree.
    """

    def __init__(self, url: str, *, pool_size: int = 2) -> None:
        self.engine: AsyncEngine = create_async_engine(
            make_url(url).set(drivername="postgresql+asyncpg"),
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_recycle=3600,
        )
        self._prepared = False

    async def prepare(self) -> None:
        if self._prepared:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                {"name": "chatdesk-migrate-blobs"},
            )
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"'))
            if await conn.scalar(text("SELECT to_regclass('blobs.blobs')")) is None:
                await conn.run_sync(_metadata.create_all)
                # Pictures and documents arrive compressed already: trying again is wasted CPU.
                await conn.execute(
                    text("ALTER TABLE blobs.blobs ALTER COLUMN data SET STORAGE EXTERNAL")
                )
        self._prepared = True

    async def put(self, data: bytes, *, content_type: str, name: str) -> str:
        key = blob_key(data)
        async with self.engine.begin() as conn:
            await conn.execute(
                pg_insert(BLOBS)
                .values(
                    key=key,
                    content_type=content_type[:200],
                    name=name[:300],
                    size=len(data),
                    data=data,
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["key"])
            )
        return key

    async def get(self, key: str) -> Blob | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(BLOBS.c.data, BLOBS.c.content_type, BLOBS.c.name).where(
                        BLOBS.c.key == key
                    )
                )
            ).first()
        if row is None:
            return None
        return Blob(key, bytes(row.data), row.content_type, row.name)

    async def exists(self, key: str) -> bool:
        async with self.engine.connect() as conn:
            found = await conn.scalar(select(BLOBS.c.key).where(BLOBS.c.key == key))
        return found is not None

    async def close(self) -> None:
        await self.engine.dispose()


def open_blob_store(settings: Settings) -> BlobStore:
    """The store the settings choose (`CHATDESK_BLOB_STORE`; `auto` follows `DATABASE_URL`)."""
    kind = settings.blob_store
    if kind == "auto":
        kind = "postgres" if settings.blob_database_url or settings.database_url else "directory"
    if kind == "postgres":
        url = settings.blob_database_url or settings.database_url
        if url is None:
            raise SystemExit(
                "CHATDESK_BLOB_STORE=postgres needs CHATDESK_BLOB_DATABASE_URL or DATABASE_URL"
            )
        return PostgresBlobStore(url)
    return DirectoryBlobStore(settings.blob_dir or settings.data_path / "blobs")
