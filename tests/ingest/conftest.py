"""ingest's own tables, migrated, on PostgreSQL and on SQLite: each test runs on both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from libs.common.db import Database
from libs.common.settings import Settings
from services.ingest import service
from services.ingest.models import Base
from tests.support.backends import Servers

INGEST = Path(service.__file__).parent


@pytest.fixture(scope="module")
async def postgres_url(servers: Servers) -> str:
    url, _ = await servers.fresh()
    return url


@pytest.fixture(params=["postgresql", "sqlite"])
async def db(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path
) -> AsyncIterator[Database]:
    settings = Settings(
        DATABASE_URL=postgres_url if request.param == "postgresql" else None,
        AMQP_URL=None,
        data_dir=tmp_path / "data",
    )
    database = Database(settings, "ingest", Base.metadata, INGEST / "migrations")
    if database.is_postgres:
        async with database.engine.begin() as conn:
            await conn.execute(text('DROP SCHEMA IF EXISTS "ingest" CASCADE'))
    await database.migrate()
    yield database
    await database.dispose()
