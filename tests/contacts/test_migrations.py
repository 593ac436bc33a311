"""contacts' migrations on existing rows (PostgreSQL and SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from services.contacts import duplicates, models
from services.contacts.names import name_key
from services.contacts.service import name_word_rows
from tests.support.databases import migrated

NAMES = {"c-1": "Ivan Petrov", "c-2": "Δημήτρης Παπαδόπουλος", "c-3": "I. Li", "c-4": "Anna"}


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
async def test_name_words_of_existing_contacts_get_their_deletions(
    dialect: str, postgres_url: str, tmp_path: Path
) -> None:
    package = Path(models.__file__).parent
    async with migrated(
        dialect, postgres_url, tmp_path, "contacts", models.Base.metadata, package, "0001"
    ) as db:
        async with db.engine.begin() as conn:
            for contact_id, name in NAMES.items():
                await conn.execute(
                    text(
                        "INSERT INTO contacts (id, name, name_key, created_at)"
                        " VALUES (:id, :name, :key, CURRENT_TIMESTAMP)"
                    ),
                    {"id": contact_id, "name": name, "key": name_key(name)},
                )
                # What 0001's product wrote: the name's own words.
                for row in name_word_rows(contact_id, name_key(name)):
                    if row.pop("exact"):
                        await conn.execute(
                            text(
                                "INSERT INTO name_words (contact_id, word, words, full_words)"
                                " VALUES (:contact_id, :word, :words, :full_words)"
                            ),
                            row,
                        )

        await db.migrate()

        async with db.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT contact_id, word, exact, words, full_words FROM name_words")
            )
            migrated_rows = {tuple(row) for row in rows}
        assert migrated_rows == {
            tuple(row.values())
            for contact_id, name in NAMES.items()
            for row in name_word_rows(contact_id, name_key(name))
        }
        async with db.sessions() as session:
            for searched, found in (("Δημήτρις Παπαδόπουλος", ["c-2"]), ("Ivan Pertov", ["c-1"])):
                assert await duplicates.name_candidates(session, name_key(searched)) == found
