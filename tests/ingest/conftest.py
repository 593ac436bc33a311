"""ingest's own tables, migrated, on PostgreSQL and on SQLite: each test runs on both."""

from __future__ import annotations

import pytest

from services.ingest.models import Channel
from tests.support.databases import database_fixture

db = database_fixture("ingest")


@pytest.fixture
def channel() -> Channel:
    """A Telegram channel, not stored: what normalizing an update needs (modules testing other
    channels define their own)."""
    return Channel(
        id="0b6c5f5e-8d0e-4b8f-9a52-0c1f6e6f2d11",
        kind="telegram",
        name="Support bot",
        queue_id="5a1d7c1e-3f4b-4a77-8f0e-2b9d2c6a9e01",
        api_base="https://api.telegram.org",
        token="7012345678:AAHk-secret_bot_token",
        secret="webhook-secret",
        active=True,
    )
