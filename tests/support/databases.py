"""A service's own database, migrated, on PostgreSQL (a schema of a fresh database) or SQLite."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, text

from libs.common.db import Database
from libs.common.settings import Settings


@asynccontextmanager
async def migrated(
    dialect: str, postgres_url: str, tmp_path: Path, service: str, metadata: MetaData, package: Path
) -> AsyncIterator[Database]:
    settings = Settings(
        DATABASE_URL=postgres_url if dialect == "postgresql" else None,
        AMQP_URL=None,
        data_dir=tmp_path / "data",
    )
    db = Database(settings, service, metadata, package / "migrations")
    if db.is_postgres:
        async with db.engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{service}" CASCADE'))
    await db.migrate()
    try:
        yield db
    finally:
        await db.dispose()


def database_fixture(service: str) -> Any:
    """A `db` fixture: the service's tables, migrated, on PostgreSQL and on SQLite (each test
    that uses it runs on both)."""

    @pytest.fixture(params=["postgresql", "sqlite"])
    async def db(
        request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path
    ) -> AsyncIterator[Database]:
        models = importlib.import_module(f"services.{service}.models")
        package = Path(models.__file__).parent
        async with migrated(
            request.param, postgres_url, tmp_path, service, models.Base.metadata, package
        ) as database:
            yield database

    return db
