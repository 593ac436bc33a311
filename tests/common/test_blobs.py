"""The blob store (libs/common/blobs.py): a directory, and PostgreSQL's `blobs` schema."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.common.blobs import BlobStore, DirectoryBlobStore, PostgresBlobStore, open_blob_store
from libs.common.settings import Settings

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


@pytest.fixture(params=["directory", "postgres"])
async def store(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path
) -> AsyncIterator[BlobStore]:
    blobs: BlobStore = (
        DirectoryBlobStore(tmp_path / "blobs")
        if request.param == "directory"
        else PostgresBlobStore(postgres_url)
    )
    await blobs.prepare()
    yield blobs
    await blobs.close()


async def test_put_then_get_gives_the_same_bytes_and_metadata(store: BlobStore) -> None:
    key = await store.put(PNG, content_type="image/png", name="Счёт № 1.png")

    assert key == hashlib.sha256(PNG).hexdigest()
    assert await store.exists(key)
    blob = await store.get(key)
    assert blob is not None
    assert (blob.data, blob.content_type, blob.name, blob.size) == (
        PNG,
        "image/png",
        "Счёт № 1.png",
        len(PNG),
    )


async def test_the_same_bytes_are_stored_once_under_one_key(store: BlobStore) -> None:
    data = b"%PDF-1.7 " + PNG
    first, second = await asyncio.gather(
        store.put(data, content_type="application/pdf", name="a.pdf"),
        store.put(data, content_type="application/pdf", name="a.pdf"),
    )
    again = await store.put(data, content_type="application/octet-stream", name="b.bin")

    assert first == second == again
    blob = await store.get(first)
    assert blob is not None and blob.data == data


async def test_an_unknown_key_is_none(store: BlobStore) -> None:
    missing = hashlib.sha256(b"never stored").hexdigest()
    assert await store.get(missing) is None
    assert not await store.exists(missing)


async def test_prepare_twice_and_from_two_replicas(postgres_url: str) -> None:
    replicas = [PostgresBlobStore(postgres_url), PostgresBlobStore(postgres_url)]
    await asyncio.gather(*(r.prepare() for r in replicas))
    key = await replicas[0].put(b"shared", content_type="text/plain", name="s.txt")
    blob = await replicas[1].get(key)
    assert blob is not None and blob.data == b"shared"
    for replica in replicas:
        await replica.prepare()
        await replica.close()


async def test_a_directory_key_never_names_a_path_outside_the_store(tmp_path: Path) -> None:
    store = DirectoryBlobStore(tmp_path / "blobs")
    with pytest.raises(ValueError):
        await store.get("../../etc/passwd")


def test_settings_choose_the_store(tmp_path: Path) -> None:
    embedded = Settings(DATABASE_URL=None, AMQP_URL=None, data_dir=tmp_path)
    assert isinstance(open_blob_store(embedded), DirectoryBlobStore)
    on_postgres = Settings(DATABASE_URL="postgresql://u@h/db", AMQP_URL=None, data_dir=tmp_path)
    assert isinstance(open_blob_store(on_postgres), PostgresBlobStore)
    forced = Settings(
        DATABASE_URL="postgresql://u@h/db", AMQP_URL=None, data_dir=tmp_path, blob_store="directory"
    )
    assert isinstance(open_blob_store(forced), DirectoryBlobStore)
