"""chat's own tables, migrated, on PostgreSQL and on SQLite: each test runs on both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import services.chat
from libs.common.db import Database
from services.chat.models import Base
from tests.support.databases import migrated


@pytest.fixture(params=["postgresql", "sqlite"])
async def db(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path
) -> AsyncIterator[Database]:
    package = Path(services.chat.__file__).parent
    async with migrated(request.param, postgres_url, tmp_path, "chat", Base.metadata, package) as d:
        yield d
