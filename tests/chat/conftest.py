"""chat's own tables, migrated, on PostgreSQL and on SQLite: each test runs on both."""

from __future__ import annotations

from tests.support.databases import database_fixture

db = database_fixture("chat")
