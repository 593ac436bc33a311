"""ingest's own tables, migrated, on PostgreSQL and on SQLite: each test runs on both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.common.db import Database
from services.ingest import service
from services.ingest.models import Base
from tests.support.databases import migrated

INGEST = Path(service.__file__).parent


@pytest.fixture(params=["postgresql", "sqlite"])
async def db(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path
) -> AsyncIterator[Database]:
    async with migrated(
        request.param, postgres_url, tmp_path, "ingest", Base.metadata, INGEST
    ) as d:
        yield d
